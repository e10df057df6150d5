// Every kind of OS call the engine makes, made to fail (the OS layer's failure injector, c/osfail.c)
// during a real engine operation on real memory: the operation reports the error (or a fault re-runs
// and is resolved), and the tables are as they were: page states, p2m, frame states and counts, the
// engine's free bitmap (pl_check_arena), the mapping count against the kernel's /proc/self/maps.
using System.Runtime.InteropServices;
using PageLab.Core;
using PageLab.Core.Faults;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core.Recovery;
using PageLab.Native;

namespace PageLab.Tests;

public class OsFailureTests
{
    private const int ENOMEM = 12, EIO = 5, ENOSPC = 28, EPERM = 1, EAGAIN = 11; // Linux errnos (the injector passes them through)

    private static GuestPage P(ulong g) => new(g);

    private static void Fill(GuestVm vm, ulong g, ulong value) => MemoryMarshal.Cast<byte, ulong>(vm.Page(P(g))).Fill(value);

    private static bool Holds(GuestVm vm, ulong g, ulong value) => MemoryMarshal.Cast<byte, ulong>(vm.Page(P(g))).IndexOfAnyExcept(value) < 0;

    private static ulong ValueOf(ulong g) => 0x5EED_0000_0000_0001UL | g << 8;

    /// <summary>Everything an operation that failed must leave as it was, as text (so a difference is shown).</summary>
    internal static string Tables(HostArena arena, params GuestVm[] vms)
    {
        var s = new System.Text.StringBuilder();
        foreach (GuestVm vm in vms)
        {
            s.Append(vm.Name).Append(": ");
            for (ulong g = 0; g < vm.PageCount; g++)
                s.Append(vm.StateOf(P(g))).Append('/').Append(vm.Translate(P(g))?.Value.ToString() ?? "-").Append(' ');
            s.Append($"maps {vm.MappingCount} pool {vm.PoolCount} held {vm.HeldFrames}");
            if (OperatingSystem.IsLinux()) s.Append($" kernel VMAs {KernelMappings(vm)}");
            s.Append(EngineTables.CheckRegion(vm) ?? "").Append('\n');
        }
        s.Append("frames: ");
        for (uint f = 0; f < arena.FrameCount; f++) s.Append((int)arena.StateOf(new HostFrame(f)));
        s.Append($" counts {arena.Counts} ").Append(EngineTables.CheckArena(arena) ?? "arena consistent");
        return s.ToString();
    }

    internal static long KernelMappings(GuestVm vm) => OsMaps.InRange((ulong)vm.Base, vm.PageCount * (ulong)vm.Arena.PageSize).Count;

    private static void AssertConsistent(HostArena arena, params GuestVm[] vms)
    {
        Assert.Null(EngineTables.CheckArena(arena));
        foreach (GuestVm vm in vms)
        {
            Assert.Null(EngineTables.CheckRegion(vm));
            if (OperatingSystem.IsLinux()) Assert.Equal(vm.MappingCount, KernelMappings(vm));
        }
    }

    private static (TestArena T, GuestVm Vm) Vm(ulong pages = 16, uint frames = 128)
    {
        var t = new TestArena(frames);
        GuestVm vm = t.Vm("osfail", pages, pool: 8);
        vm.Back(P(0), pages / 2);
        for (ulong g = 0; g < pages / 2; g++) Fill(vm, g, ValueOf(g));
        return (t, vm);
    }

    private static int PageFlags(GuestVm vm, ulong g)
    {
        using RegionUse use = vm.Use();
        return Interop.PageLab.PageFlags(use.Id, g);
    }

    private static OsCallCounts Count(OsCall kind) => OsFailureInjector.Counts[kind];

    [Fact]
    public void A_failed_mmap_fails_the_remap_and_leaves_every_table_as_it_was()
    {
        (TestArena t, GuestVm vm) = Vm();
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        HostFrame fresh = t.Arena.Allocate(1)[0];
        string before = Tables(t.Arena, vm);

        OsFailureInjector.FailNth(OsCall.Map, 1, ENOMEM);
        var e = Assert.Throws<ErrnoException>(() => vm.Map(P(3), [fresh]));

        Assert.Equal(ENOMEM, e.Errno);
        Assert.Equal(1UL, Count(OsCall.Map).Failed);
        Assert.Equal(before, Tables(t.Arena, vm));
        Assert.Equal(FrameState.Held, t.Arena.StateOf(fresh));
        Assert.True(Holds(vm, 3, ValueOf(3)));
        t.Arena.Release([fresh]);
        AssertConsistent(t.Arena, vm);
    }

    [Fact]
    public void A_failed_mmap_in_a_demand_fault_is_tried_again_and_the_fault_succeeds()
    {
        (TestArena t, GuestVm vm) = Vm();
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        vm.RefillPool();

        OsFailureInjector.FailNth(OsCall.Map, 1, ENOMEM);
        Fill(vm, 12, ValueOf(12)); // the handler's mmap fails once and is made again (a forced change)

        Assert.Equal(1UL, Count(OsCall.Map).Failed);
        Assert.Equal(GuestPageState.Backed, vm.StateOf(P(12)));
        Assert.True(Holds(vm, 12, ValueOf(12)));
        AssertConsistent(t.Arena, vm);
    }

    [Fact]
    public void A_failed_munmap_at_destroy_leaves_no_view_of_a_freed_frame()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("reads the kernel's mappings in /proc/self/maps (Linux)");
        (TestArena t, GuestVm vm) = Vm();
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        ulong lo = (ulong)vm.Base, bytes = vm.PageCount * (ulong)t.Arena.PageSize;
        Assert.Contains(OsMaps.InRange(lo, bytes), m => m.Path.Length > 0); // frame views of the memfd

        OsFailureInjector.FailNth(OsCall.Unmap, 1, ENOMEM);
        vm.Dispose();

        Assert.Equal(1UL, Count(OsCall.Unmap).Failed);
        List<OsMaps.Mapping> left = OsMaps.InRange(lo, bytes);
        // Covered by one anonymous, inaccessible mapping instead: no frame (now free for other VMs) is seen through it.
        Assert.All(left, m => Assert.True(m.Path.Length == 0 && m.Perms.StartsWith("---"), $"left behind: {m}"));
        Assert.Equal(0, t.Arena.Counts.Guest);
        Assert.Null(EngineTables.CheckArena(t.Arena));
        Assert.Equal(0, Mono.Unix.Native.Syscall.munmap((IntPtr)(long)lo, bytes)); // the reservation the engine could not give back
    }

    [Fact]
    public void A_failed_mprotect_fails_sampling_and_leaves_every_table_as_it_was()
    {
        (TestArena t, GuestVm vm) = Vm();
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        string before = Tables(t.Arena, vm);

        OsFailureInjector.FailNth(OsCall.Protect, 1, ENOMEM);
        var e = Assert.Throws<ErrnoException>(() => vm.Sample([P(2)]));

        Assert.Equal(ENOMEM, e.Errno);
        Assert.Equal(before, Tables(t.Arena, vm));
        Assert.True(Holds(vm, 2, ValueOf(2)));
        AssertConsistent(t.Arena, vm);
    }

    [Fact]
    public void A_failed_mprotect_in_a_write_to_a_protected_page_reruns_the_fault_and_parity_stays_true()
    {
        (TestArena t, GuestVm vm) = Vm();
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        using var engine = new RecoveryEngine(vm, new ProtectionPolicy { GroupSize = 4 });
        Assert.Equal(8, engine.Protect(Enumerable.Range(0, 8).Select(g => P((ulong)g)).ToArray(), PageCategory.ReadMostly));

        OsFailureInjector.FailNth(OsCall.Protect, 1, ENOMEM);
        Fill(vm, 5, 0xABCDUL); // the write fault's mprotect fails once; its content goes back into parity; the write re-runs

        Assert.Equal(1UL, Count(OsCall.Protect).Failed);
        Assert.Equal(GuestPageState.Backed, vm.StateOf(P(5)));
        Assert.True(Holds(vm, 5, 0xABCDUL));
        Assert.Empty(vm.ScrubParity());
        AssertConsistent(t.Arena, vm);
    }

    [Fact]
    public void A_failed_fallocate_fails_the_release_and_the_frames_stay_held()
    {
        (TestArena t, GuestVm vm) = Vm();
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        HostFrame[] frames = t.Arena.Allocate(3);
        string before = Tables(t.Arena, vm);

        OsFailureInjector.FailNth(OsCall.Discard, 1, EIO);
        var e = Assert.Throws<ErrnoException>(() => t.Arena.Release(frames));

        Assert.Equal(EIO, e.Errno);
        Assert.Equal(before, Tables(t.Arena, vm));
        Assert.All(frames, f => Assert.Equal(FrameState.Held, t.Arena.StateOf(f)));
        t.Arena.Release(frames);
        AssertConsistent(t.Arena, vm);
    }

    [Fact]
    public void A_failed_fallocate_when_unbacking_zeroes_the_frame_before_it_is_freed()
    {
        (TestArena t, GuestVm vm) = Vm();
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        HostFrame old = vm.Translate(P(4))!.Value;
        Assert.True(Holds(vm, 4, ValueOf(4)));

        OsFailureInjector.FailNth(OsCall.Discard, 1, EIO);
        vm.Unback(P(4), 1);

        Assert.Equal(1UL, Count(OsCall.Discard).Failed);
        Assert.Equal(GuestPageState.Unbacked, vm.StateOf(P(4)));
        // Free again (a passing failure never shrinks the arena for good), and never with the VM's bytes in it.
        Assert.Equal(FrameState.Free, t.Arena.StateOf(old));
        Assert.True(t.Arena.FrameBytes(old).IndexOfAnyExcept((byte)0) < 0);
        AssertConsistent(t.Arena, vm);
    }

    [Fact]
    public void Punches_failing_again_and_again_never_drain_the_arena()
    {
        // Every host swap-out frees its frames (punched), every swap-in takes one; a third of the punches fail.
        // A frame freed unpunched is zeroed instead, so the arena keeps all its frames and every page its content
        // (retired instead, the 32 frames would be gone within a few dozen rounds and a swap-in would find none).
        (TestArena t, GuestVm vm) = Vm(pages: 16, frames: 32);
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        for (ulong g = 0; g < 16; g++) Fill(vm, g, ValueOf(g));
        OsFailureInjector.FailAtRandom(9, 333_333, [OsCall.Discard]);
        for (ulong round = 1; round <= 200; round++)
        {
            Assert.Equal(8, vm.HostSwapOut(8));
            for (ulong g = 0; g < 16; g++)
            {
                Assert.True(Holds(vm, g, ValueOf(g) + round - 1));
                Fill(vm, g, ValueOf(g) + round);
            }
        }
        Assert.True(Count(OsCall.Discard).Failed > 100, $"{Count(OsCall.Discard).Failed} punches failed");
        OsFailureInjector.Off();
        Assert.Equal(0, t.Arena.Counts.Retired);
        AssertConsistent(t.Arena, vm);
    }

    [Fact]
    public void A_failed_pwrite_fails_the_host_swap_out_and_leaves_every_table_as_it_was()
    {
        (TestArena t, GuestVm vm) = Vm();
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        string before = Tables(t.Arena, vm);

        // Every write refused (a full disk): nothing goes, and every table is as it was.
        OsFailureInjector.FailAtRandom(1, 1_000_000, [OsCall.Write]);
        Assert.Equal(0, vm.HostSwapOut(1));
        Assert.True(Count(OsCall.Write).Failed >= 1);
        Assert.Equal(before, Tables(t.Arena, vm));
        AssertConsistent(t.Arena, vm);
        OsFailureInjector.Off();

        // Only the first victim's write refused: that page keeps its frame and content, and the next victim
        // goes instead (a bounded search: one refused write never leaves a fault without a frame).
        OsFailureInjector.FailNth(OsCall.Write, 1, ENOSPC);
        Assert.Equal(1, vm.HostSwapOut(1));
        Assert.Equal(1UL, Count(OsCall.Write).Failed);
        Assert.Equal(1, Enumerable.Range(0, 8).Count(g => vm.StateOf(P((ulong)g)) == GuestPageState.Swapped));
        AssertConsistent(t.Arena, vm);
        for (ulong g = 0; g < 8; g++) Assert.True(Holds(vm, g, ValueOf(g)));
        AssertConsistent(t.Arena, vm);
    }

    [Fact]
    public void A_failed_pread_in_a_swap_in_reruns_the_fault_and_the_page_comes_back_whole()
    {
        (TestArena t, GuestVm vm) = Vm();
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        Assert.Equal(8, vm.HostSwapOut(8));
        Assert.Equal(GuestPageState.Swapped, vm.StateOf(P(6)));
        ulong spurious = vm.Counters.Spurious;

        OsFailureInjector.FailNth(OsCall.Read, 1, EIO);
        Assert.True(Holds(vm, 6, ValueOf(6))); // the handler's pread fails; the fault is not chained (that would end the process) but re-runs

        Assert.Equal(1UL, Count(OsCall.Read).Failed);
        Assert.True(vm.Counters.Spurious > spurious, "the failed fault re-ran (counted with the spurious ones)");
        Assert.Equal(GuestPageState.Backed, vm.StateOf(P(6)));
        AssertConsistent(t.Arena, vm);
    }

    [Fact]
    public void Short_reads_and_writes_are_asked_again_for_the_rest_and_swapped_pages_come_back_whole()
    {
        (TestArena t, GuestVm vm) = Vm(pages: 64);
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        OsFailureInjector.ShortTransfers(1_000_000); // every read and write moves fewer bytes than asked

        for (int round = 0; round < 4; round++)
        {
            Assert.Equal(32, vm.HostSwapOut(32));
            for (ulong g = 0; g < 32; g++) Assert.True(Holds(vm, g, ValueOf(g)), $"round {round}: page {g}");
        }

        Assert.True(Count(OsCall.Write).Shortened >= 128 && Count(OsCall.Read).Shortened >= 128,
            $"{Count(OsCall.Write).Shortened} writes, {Count(OsCall.Read).Shortened} reads shortened");
        AssertConsistent(t.Arena, vm);
    }

    private static KernelInjector KernelInjectorOrSkip()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("kernel-delivered errors and the userfaultfd are Linux's");
        if (KernelErrorInjector.Available.Preferred is not KernelInjector how) Assert.Skip($"no kernel injector: {KernelErrorInjector.Available.Unavailable}");
        else return how;
        return default;
    }

    [Theory]
    [InlineData(OsCall.Uffd, 1)]   // UFFDIO_REGISTER
    [InlineData(OsCall.Uffd, 2)]   // UFFDIO_POISON, after the PTE was dropped
    [InlineData(OsCall.Advise, 1)] // MADV_DONTNEED
    public void A_failed_userfaultfd_or_madvise_call_fails_the_kernel_injection_and_the_page_reads_as_before(OsCall kind, int nth)
    {
        KernelInjector how = KernelInjectorOrSkip();
        if (how != KernelInjector.UffdPoison) Assert.Skip("the poison-marker path (UFFDIO_POISON) is not the one here");
        (TestArena t, GuestVm vm) = Vm();
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        Assert.NotNull(KernelErrorInjector.Available.Preferred); // the userfaultfd is opened before counting starts
        string before = Tables(t.Arena, vm);
        KernelErrorCounters errors = KernelErrors.Counters;

        OsFailureInjector.FailNth(kind, (ulong)nth, EAGAIN);
        Assert.ThrowsAny<Exception>(() => KernelErrorInjector.IntoPage(vm, P(3), 8, [0xFF], how: how));

        Assert.Equal(1UL, Count(kind).Failed);
        Assert.Equal(before, Tables(t.Arena, vm));
        Assert.True(Holds(vm, 3, ValueOf(3))); // no marker, no flipped byte: no SIGBUS, the true bytes
        Assert.Equal(errors, KernelErrors.Counters);
        Assert.Equal(0, PageFlags(vm, 3) & 0x80); // PL_PF_KPOISON
        AssertConsistent(t.Arena, vm);
    }

    [Fact]
    public void A_refused_kernel_read_in_the_sigbus_handler_is_asked_again_and_the_page_is_recovered()
    {
        KernelInjector how = KernelInjectorOrSkip();
        (TestArena t, GuestVm vm) = Vm();
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        using var engine = new RecoveryEngine(vm, new ProtectionPolicy { GroupSize = 4 });
        Assert.Equal(8, engine.Protect(Enumerable.Range(0, 8).Select(g => P((ulong)g)).ToArray(), PageCategory.ReadMostly));
        HostFrame bad = KernelErrorInjector.IntoPage(vm, P(6), 8, [0xFF], onlyIfProtected: true, how)!.Value;

        OsFailureInjector.FailNth(OsCall.Peek, 1, EPERM);
        Assert.True(Holds(vm, 6, ValueOf(6))); // SIGBUS; the handler's kernel read is refused once, asked again (EFAULT: bad), rebuilt

        Assert.Equal(1UL, Count(OsCall.Peek).Failed);
        engine.CollectHandlerEvents();
        Assert.Equal(FrameState.Retired, t.Arena.StateOf(bad));
        Assert.False(vm.IsLost(P(6)));
        AssertConsistent(t.Arena, vm);
    }

    [Fact]
    public void A_failed_mmap_while_the_sigbus_handler_recovers_a_kernel_poisoned_page_re_runs_the_access()
    {
        KernelInjector how = KernelInjectorOrSkip();
        (TestArena t, GuestVm vm) = Vm();
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        using var engine = new RecoveryEngine(vm, new ProtectionPolicy { GroupSize = 4 });
        Assert.Equal(8, engine.Protect(Enumerable.Range(0, 8).Select(g => P((ulong)g)).ToArray(), PageCategory.ReadMostly));
        HostFrame bad = KernelErrorInjector.IntoPage(vm, P(5), 8, [0xFF], onlyIfProtected: true, how)!.Value;

        // The rebuilt frame's MAP_FIXED mmap fails once: a passing shortage, not a page without a frame (the
        // process died here with "no frame to recover or contain it into").
        OsFailureInjector.FailNth(OsCall.Map, 1, ENOMEM);
        ulong seen = MemoryMarshal.Cast<byte, ulong>(vm.Page(P(5)))[0];
        Assert.True(Holds(vm, 5, ValueOf(5)), $"reads {seen:x16}, lost {vm.IsLost(P(5))}, {vm.StateOf(P(5))}, mmap failed {Count(OsCall.Map).Failed}"); // SIGBUS; the repair fails, the access re-runs, the second repair maps

        Assert.Equal(1UL, Count(OsCall.Map).Failed);
        engine.CollectHandlerEvents();
        Assert.Equal(FrameState.Retired, t.Arena.StateOf(bad));
        Assert.False(vm.IsLost(P(5)));
        AssertConsistent(t.Arena, vm);
    }

    [Fact]
    public void A_failed_mmap_of_the_tables_fails_vm_creation_and_takes_nothing()
    {
        using var t = new TestArena(64);
        using var injector = OsFailureInjector.Scope();
        long maps = FaultEngine.MapsInUse;
        // The tables are the creation's one mmap: the guest range is carved from a window of address space
        // reserved once (addrspace.c), with no OS call of its own.
        OsFailureInjector.FailNth(OsCall.Map, 1, ENOMEM);
        var e = Assert.Throws<ErrnoException>(() => GuestVm.Create(t.Arena, "refused", 16, 8, hostSwap: false));
        Assert.Equal(ENOMEM, e.Errno);
        Assert.Equal(maps, FaultEngine.MapsInUse);
        Assert.Equal(64, t.Arena.Counts.Free);
        Assert.Equal(1UL, Count(OsCall.Map).Failed);
        using GuestVm created = GuestVm.Create(t.Arena, "created", 16, 8, hostSwap: false); // nothing left behind
    }

    [Fact]
    public void An_error_in_a_shared_frame_unbacks_every_sharer_even_when_an_unmap_fails_once()
    {
        (TestArena t, GuestVm vm) = Vm();
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        vm.EnableSharing();
        Fill(vm, 2, 0x77UL);
        Fill(vm, 3, 0x77UL);
        HostFrame shared = vm.ShareCreate(P(2))!.Value;
        Assert.Equal(ShareResult.Merged, vm.TryShare(P(3), shared));
        MemoryErrorInjector.IntoFrame(t.Arena, shared, 100, [0x5A]);

        // The first sharer's unback fails once: a hole is an mmap on Linux, an unmapped view on Windows.
        OsCall hole = OperatingSystem.IsWindows() ? OsCall.Unmap : OsCall.Map;
        OsFailureInjector.FailNth(hole, 1, ENOMEM);
        Assert.True(t.Arena.ReportShared(shared) is (_, true));

        Assert.Equal(1UL, Count(hole).Failed);
        foreach (ulong g in new ulong[] { 2, 3 })
        {
            Assert.Equal(GuestPageState.Unbacked, vm.StateOf(P(g))); // never left on the bad frame
            Assert.True(vm.IsLost(P(g)));
            Assert.True(Holds(vm, g, 0)); // a touch reads zeros, never the bad bytes
        }
        Assert.Equal(FrameState.Retired, t.Arena.StateOf(shared));
        vm.TakeHandlerEvents();
        AssertConsistent(t.Arena, vm);
    }

    [Fact]
    public void A_failed_pread_of_a_good_disk_copy_is_read_again_and_the_page_is_recovered_not_lost()
    {
        (TestArena t, GuestVm vm) = Vm();
        using var _ = t;
        using var injector = OsFailureInjector.Scope();
        using var disk = new FileStream(Path.Combine(Path.GetTempPath(), $"pagelab-osfail-{Guid.NewGuid():N}"), FileMode.Create,
            FileAccess.ReadWrite, FileShare.Read, 4096, FileOptions.DeleteOnClose);
        disk.Write(vm.Page(P(5)));
        disk.Flush();
        using var engine = new RecoveryEngine(vm);
        engine.UseDiskFile(disk.SafeFileHandle);
        engine.Unrecoverable = g => $"context of {g}";
        Assert.Equal(1, engine.Protect([P(5)], PageCategory.CleanWithDiskCopy, _ => 0));
        HostFrame bad = MemoryErrorInjector.IntoPage(vm, P(5), 16, [0xFF, 0xFF])!.Value;

        OsFailureInjector.FailNth(OsCall.Read, 1, EIO); // the disk copy's read fails once
        ErrorReport r = engine.Report(bad);

        Assert.Equal(1UL, Count(OsCall.Read).Failed);
        Assert.Equal(ErrorOutcome.Recovered, r.Outcome); // a read that failed is not a copy that failed its hash
        Assert.False(vm.IsLost(P(5)));
        Assert.True(Holds(vm, 5, ValueOf(5)));
        AssertConsistent(t.Arena, vm);
    }
}
