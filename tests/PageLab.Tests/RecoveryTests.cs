// Transparent recovery on real memory, real faults and real files: parity rebuilds, disk refills,
// write faults that keep parity true, the scrubber, containment of unprotected errors, bad requests.
using System.Runtime.InteropServices;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core.Recovery;

namespace PageLab.Tests;

public class RecoveryTests
{
    internal static void FillPattern(Span<byte> page, ulong seed) =>
        MemoryMarshal.Cast<byte, ulong>(page).Fill(seed * 0x9E3779B97F4A7C15UL + 1);

    internal static bool HasPattern(ReadOnlySpan<byte> page, ulong seed)
    {
        ulong want = seed * 0x9E3779B97F4A7C15UL + 1;
        foreach (ulong w in MemoryMarshal.Cast<byte, ulong>(page)) if (w != want) return false;
        return true;
    }

    private static (TestArena T, GuestVm Vm, RecoveryEngine Engine) Setup(ulong pages, uint frames = 1024, int k = 8)
    {
        var t = new TestArena(frames);
        GuestVm vm = t.Vm("rec", pages, pool: 64);
        vm.RefillPool();
        vm.Back(new GuestPage(0), pages);
        for (ulong g = 0; g < pages; g++) FillPattern(vm.Page(new GuestPage(g)), g);
        return (t, vm, new RecoveryEngine(vm, new ProtectionPolicy { GroupSize = k }));
    }

    private static GuestPage[] Range(ulong first, ulong count) =>
        Enumerable.Range((int)first, (int)count).Select(g => new GuestPage((ulong)g)).ToArray();

    [Theory]
    [InlineData(ErrorKind.SingleBit)]
    [InlineData(ErrorKind.MultiBit)]
    [InlineData(ErrorKind.ByteRange)]
    [InlineData(ErrorKind.WholePage)]
    public void A_reported_error_on_a_parity_page_is_rebuilt_bit_exact_and_the_bad_frame_retired(ErrorKind kind)
    {
        (TestArena t, GuestVm vm, RecoveryEngine engine) = Setup(32);
        using var _ = t;
        Assert.Equal(16, engine.Protect(Range(0, 16), PageCategory.ReadMostly));
        Assert.Equal(2, engine.Groups);
        var rng = new Random((int)kind);
        (int offset, byte[] mask) = MemoryErrorInjector.Pattern(kind, t.Arena.PageSize, rng);

        HostFrame bad = MemoryErrorInjector.IntoPage(vm, new GuestPage(5), offset, mask)!.Value;
        Assert.Equal(GuestPageState.Poisoned, vm.StateOf(new GuestPage(5)));
        Assert.False(HasPattern(t.Arena.FrameBytes(bad), 5));
        ErrorReport r = engine.Report(bad);

        Assert.Equal(ErrorOutcome.Recovered, r.Outcome);
        Assert.Equal(new GuestPage(5), r.Page);
        Assert.NotEqual(bad, vm.Translate(new GuestPage(5)));
        Assert.True(HasPattern(vm.Page(new GuestPage(5)), 5));
        Assert.Equal(FrameState.Retired, t.Arena.StateOf(bad));
        Assert.Equal(GuestPageState.Tracked, vm.StateOf(new GuestPage(5)));
        Assert.Empty(vm.ScrubParity());
    }

    [Fact]
    public void A_write_to_a_covered_page_takes_a_real_fault_and_parity_stays_true()
    {
        (TestArena t, GuestVm vm, RecoveryEngine engine) = Setup(16);
        using var _ = t;
        engine.Protect(Range(0, 8), PageCategory.KernelLike);
        Assert.Equal(GuestPageState.Tracked, vm.StateOf(new GuestPage(2)));

        vm.Page(new GuestPage(2))[10] = 0xEE;                            // a real write fault

        Assert.Equal(1UL, vm.Counters.TrackedWrites);
        Assert.Equal(GuestPageState.Backed, vm.StateOf(new GuestPage(2)));
        Assert.Empty(vm.ScrubParity());
        Assert.Equal(1, engine.Reprotect());
        Assert.Empty(vm.ScrubParity());
        // The rewritten page is recovered with its new content.
        HostFrame bad = MemoryErrorInjector.IntoPage(vm, new GuestPage(2), 0, [0xFF])!.Value;
        Assert.Equal(ErrorOutcome.Recovered, engine.Report(bad).Outcome);
        Assert.Equal(0xEE, vm.Page(new GuestPage(2))[10]);
    }

    [Fact]
    public void A_guest_touching_a_poisoned_page_before_the_report_is_recovered_in_the_handler()
    {
        (TestArena t, GuestVm vm, RecoveryEngine engine) = Setup(16);
        using var _ = t;
        engine.Protect(Range(0, 8), PageCategory.ReadMostly);
        HostFrame bad = MemoryErrorInjector.IntoPage(vm, new GuestPage(4), 100, [0x0F, 0xF0])!.Value;

        Assert.True(HasPattern(vm.Page(new GuestPage(4)), 4));           // the read faults and is rebuilt
        Assert.Equal(1UL, vm.Counters.HandlerRecoveries);
        Assert.Equal(ErrorOutcome.Recovered, engine.Report(bad).Outcome); // the late report finds it done
        Assert.Equal(FrameState.Retired, t.Arena.StateOf(bad));
    }

    [Fact]
    public void A_clean_page_is_refilled_from_its_disk_copy_with_real_file_io()
    {
        (TestArena t, GuestVm vm, RecoveryEngine engine) = Setup(16);
        using var _ = t;
        string path = Path.Combine(Path.GetTempPath(), $"pagelab-disk-{Guid.NewGuid():N}");
        using var file = new FileStream(path, FileMode.Create, FileAccess.ReadWrite, FileShare.Read, 4096, FileOptions.DeleteOnClose);
        for (ulong g = 8; g < 16; g++) file.Write(vm.Page(new GuestPage(g)));
        file.Flush();
        engine.UseDiskFile(file.SafeFileHandle);
        Assert.Equal(8, engine.Protect(Range(8, 8), PageCategory.CleanWithDiskCopy, g => ((long)g.Value - 8) * t.Arena.PageSize));

        (int offset, byte[] mask) = MemoryErrorInjector.Pattern(ErrorKind.WholePage, t.Arena.PageSize, new Random(3));
        HostFrame bad = MemoryErrorInjector.IntoPage(vm, new GuestPage(11), offset, mask)!.Value;

        Assert.Equal(ErrorOutcome.Recovered, engine.Report(bad).Outcome);
        Assert.True(HasPattern(vm.Page(new GuestPage(11)), 11));
    }

    [Fact]
    public void Silent_corruption_is_found_by_the_scrubber_and_repaired()
    {
        (TestArena t, GuestVm vm, RecoveryEngine engine) = Setup(32);
        using var _ = t;
        engine.Protect(Range(0, 16), PageCategory.ReadMostly);
        HostFrame victim = vm.Translate(new GuestPage(9))!.Value;
        MemoryErrorInjector.IntoFrame(t.Arena, victim, 64, [1, 2, 3]);        // no poison, no report
        HostFrame parity = new(engine.ParityFrames.Keys.First());
        MemoryErrorInjector.IntoFrame(t.Arena, parity, 8, [0x80]);

        List<ErrorReport> repaired = engine.Scrub();

        Assert.Contains(repaired, r => r.Page == new GuestPage(9) && r.Outcome == ErrorOutcome.Recovered);
        Assert.Contains(repaired, r => r.Frame == parity && r.Outcome == ErrorOutcome.ParityRebuilt);
        Assert.True(HasPattern(vm.Page(new GuestPage(9)), 9));
        Assert.Empty(engine.Scrub());
    }

    [Fact]
    public void An_error_on_an_unprotected_page_is_contained_to_the_context_using_it()
    {
        (TestArena t, GuestVm vm, RecoveryEngine engine) = Setup(16);
        using var _ = t;
        var told = new List<GuestPage>();
        engine.Unrecoverable = g => { told.Add(g); return "context"; };
        HostFrame bad = MemoryErrorInjector.IntoPage(vm, new GuestPage(12), 0, [0xFF])!.Value;

        ErrorReport r = engine.Report(bad);

        Assert.Equal(ErrorOutcome.Contained, r.Outcome);
        Assert.Equal([new GuestPage(12)], told);
        Assert.Equal(GuestPageState.Unbacked, vm.StateOf(new GuestPage(12)));
        Assert.Equal(FrameState.Retired, t.Arena.StateOf(bad));
        Assert.True(HasPattern(vm.Page(new GuestPage(13)), 13));         // the rest of the VM is untouched
    }

    [Fact]
    public void Errors_in_parity_and_free_frames_are_handled_and_retired_frames_are_never_reused()
    {
        (TestArena t, GuestVm vm, RecoveryEngine engine) = Setup(16, frames: 128);
        using var _ = t;
        engine.Protect(Range(0, 8), PageCategory.ReadMostly);
        HostFrame parity = new(engine.ParityFrames.Keys.Single());
        MemoryErrorInjector.IntoFrame(t.Arena, parity, 0, [0xAA]);
        Assert.Equal(ErrorOutcome.ParityRebuilt, engine.Report(parity).Outcome);
        Assert.Empty(vm.ScrubParity());
        HostFrame free = t.Arena.Allocate(1)[0];
        t.Arena.Release([free]);
        Assert.Equal(ErrorOutcome.FreeFrameRetired, engine.Report(free).Outcome);

        HostFrame[] all = t.Arena.Allocate((uint)t.Arena.Counts.Free);
        Assert.DoesNotContain(all, f => f == parity || f == free);
        Assert.Equal(2, t.Arena.Counts.Retired);
        t.Arena.Release(all);
    }

    [Fact]
    public void Bad_injection_requests_are_refused_and_change_nothing()
    {
        (TestArena t, GuestVm vm, RecoveryEngine engine) = Setup(8, frames: 128);
        using var _ = t;
        FrameCounts before = t.Arena.Counts;
        var outOfRange = Assert.Throws<ArgumentOutOfRangeException>(() => MemoryErrorInjector.IntoFrame(t.Arena, new HostFrame(128), 0, [1]));
        Assert.Contains("frames 0..127", outOfRange.Message);
        var empty = Assert.Throws<ArgumentException>(() => MemoryErrorInjector.IntoPage(vm, new GuestPage(1), 0, [0, 0]));
        Assert.Contains("flips no bit", empty.Message);
        var tooLong = Assert.Throws<ArgumentOutOfRangeException>(() => MemoryErrorInjector.IntoFrame(t.Arena, new HostFrame(1), 4095, [1, 1]));
        Assert.Contains("does not fit", tooLong.Message);
        var badFrame = Assert.Throws<ArgumentOutOfRangeException>(() => engine.Report(new HostFrame(999)));
        Assert.Contains("frames 0..127", badFrame.Message);
        Assert.Equal(before, t.Arena.Counts);
        for (ulong g = 0; g < 8; g++) Assert.True(HasPattern(vm.Page(new GuestPage(g)), g));
        Assert.Equal(GuestPageState.Backed, vm.StateOf(new GuestPage(1)));
    }

    [Fact]
    public void The_protector_recovers_a_cold_page_after_one_pass_and_lets_a_hot_page_wait_longer()
    {
        (TestArena t, GuestVm vm, RecoveryEngine engine) = Setup(16);
        using var _ = t;
        engine.Protect(Range(0, 8), PageCategory.ReadMostly);
        vm.Page(new GuestPage(1))[0] = 1;                                  // written once, then cold
        for (int pass = 0; pass < 32; pass++)
        {
            vm.Page(new GuestPage(0))[0]++;                                // written between every two passes
            engine.Reprotect();
        }

        Assert.Equal(GuestPageState.Tracked, vm.StateOf(new GuestPage(1)));
        ulong hotFaults = vm.Counters.TrackedWrites - 1;
        Assert.True(hotFaults < 12, $"the hot page took {hotFaults} write faults in 32 passes");
        Assert.Empty(vm.ScrubParity());
        Assert.Equal(1, engine.Reprotect(coldOnly: false) + engine.Reprotect(coldOnly: false));
    }
}
