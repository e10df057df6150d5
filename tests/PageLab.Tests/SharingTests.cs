// Content-based page sharing on real memory and real faults: merging equal pages of two VMs onto one
// read-only frame, copy-on-write faults resolved by the native handler, sharers dropped by unmap and
// dispose, errors in shared frames, and isolation between VMs writing shared pages under GC stress.
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core.Recovery;

namespace PageLab.Tests;

public class SharingTests
{
    private static void Fill(GuestVm vm, ulong page, ulong value) =>
        MemoryMarshal.Cast<byte, ulong>(vm.Page(new GuestPage(page))).Fill(value);

    private static bool Reads(GuestVm vm, ulong page, ulong value)
    {
        foreach (ulong w in MemoryMarshal.Cast<byte, ulong>(vm.Page(new GuestPage(page))))
            if (w != value) return false;
        return true;
    }

    private static void AssertAccounting(TestArena t, params GuestVm[] vms)
    {
        List<string> problems = FrameAccounting.Check(t.Arena, vms);
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    private static (GuestVm A, GuestVm B) TwoSharingVms(TestArena t, ulong pages = 8)
    {
        GuestVm a = t.Vm("a", pages, pool: 8), b = t.Vm("b", pages, pool: 8);
        a.EnableSharing();
        b.EnableSharing();
        a.Back(new GuestPage(0), pages);
        b.Back(new GuestPage(0), pages);
        return (a, b);
    }

    [Fact]
    public void Equal_pages_of_two_VMs_merge_onto_one_read_only_frame_and_the_other_frame_is_freed()
    {
        using var t = new TestArena(64);
        var (a, b) = TwoSharingVms(t);
        Fill(a, 3, 0x1111_2222_3333_4444);
        Fill(b, 5, 0x1111_2222_3333_4444);
        HostFrame bOld = b.Translate(new GuestPage(5))!.Value;
        long freeBefore = t.Arena.Counts.Free;

        HostFrame shared = a.ShareCreate(new GuestPage(3))!.Value;
        AssertAccounting(t, a, b);
        Assert.Equal(ShareResult.Merged, b.TryShare(new GuestPage(5), shared));

        Assert.Equal(GuestPageState.Shared, a.StateOf(new GuestPage(3)));
        Assert.Equal(GuestPageState.Shared, b.StateOf(new GuestPage(5)));
        Assert.Equal(shared, b.Translate(new GuestPage(5)));
        Assert.Equal(FrameState.Shared, t.Arena.StateOf(shared));
        Assert.Equal(2u, t.Arena.SharersOf(shared));
        Assert.Equal(FrameState.Free, t.Arena.StateOf(bOld));
        Assert.Equal(freeBefore + 1, t.Arena.Counts.Free);
        Assert.Equal(new SharingCounts(1, 2), t.Arena.Sharing);
        Assert.Equal(1, t.Arena.Sharing.FramesSaved);
        Assert.True(Reads(a, 3, 0x1111_2222_3333_4444) && Reads(b, 5, 0x1111_2222_3333_4444));
        Assert.Equal(0UL, a.Counters.CowBreaks + b.Counters.CowBreaks); // reads take no fault
        Assert.Equal(1UL, a.Counters.PagesMerged);
        Assert.Equal(1UL, b.Counters.PagesMerged);
        AssertAccounting(t, a, b);
    }

    [Fact]
    public void A_page_whose_bytes_differ_by_one_byte_is_not_merged_and_stays_writable()
    {
        using var t = new TestArena(64);
        var (a, b) = TwoSharingVms(t);
        Fill(a, 0, 7);
        Fill(b, 0, 7);
        b.Page(new GuestPage(0))[4095] ^= 1;
        HostFrame shared = a.ShareCreate(new GuestPage(0))!.Value;
        HostFrame bFrame = b.Translate(new GuestPage(0))!.Value;

        Assert.Equal(ShareResult.Differs, b.TryShare(new GuestPage(0), shared));

        Assert.Equal(GuestPageState.Backed, b.StateOf(new GuestPage(0)));
        Assert.Equal(bFrame, b.Translate(new GuestPage(0)));
        b.Page(new GuestPage(0))[0] = 9; // writable again: no fault of any kind
        Assert.Equal(0UL, b.Counters.CowBreaks);
        Assert.Equal(0UL, b.Counters.Spurious);
        Assert.Equal(1u, t.Arena.SharersOf(shared));
        AssertAccounting(t, a, b);
    }

    [Fact]
    public void Sharing_is_opt_in_per_VM()
    {
        using var t = new TestArena(32);
        GuestVm a = t.Vm("a", 4), b = t.Vm("b", 4);
        a.Back(new GuestPage(0), 4);
        b.Back(new GuestPage(0), 4);
        b.EnableSharing();
        HostFrame shared = b.ShareCreate(new GuestPage(0))!.Value;

        var e = Assert.Throws<InvalidOperationException>(() => a.ShareCreate(new GuestPage(0)));
        Assert.Contains("opted in", e.Message);
        Assert.Throws<InvalidOperationException>(() => a.TryShare(new GuestPage(1), shared));
        Assert.Equal(GuestPageState.Backed, a.StateOf(new GuestPage(1)));
        Assert.False(a.SharingEnabled);
        AssertAccounting(t, a, b);
    }

    [Fact]
    public void A_write_to_a_shared_page_takes_a_copy_on_write_fault_and_never_changes_the_shared_frame()
    {
        using var t = new TestArena(64);
        var (a, b) = TwoSharingVms(t);
        Fill(a, 1, 0xAAAA);
        Fill(b, 1, 0xAAAA);
        HostFrame shared = a.ShareCreate(new GuestPage(1))!.Value;
        Assert.Equal(ShareResult.Merged, b.TryShare(new GuestPage(1), shared));

        b.Page(new GuestPage(1))[8] = 0x55;                      // a real write fault, copied in the handler

        Assert.Equal(1UL, b.Counters.CowBreaks);
        Assert.Equal(GuestPageState.Backed, b.StateOf(new GuestPage(1)));
        HostFrame copy = b.Translate(new GuestPage(1))!.Value;
        Assert.NotEqual(shared, copy);
        Assert.Equal(FrameState.Guest, t.Arena.StateOf(copy));
        Assert.Equal(b.Id, t.Arena.OwnerOf(copy));
        Assert.Equal(0x55, b.Page(new GuestPage(1))[8]);
        Assert.Equal(0xAA, b.Page(new GuestPage(1))[0]);         // the rest of the content was copied
        Assert.True(Reads(a, 1, 0xAAAA));                        // the other sharer never sees the write
        Assert.True(MemoryMarshal.Cast<byte, ulong>(t.Arena.FrameBytes(shared)).IndexOfAnyExcept(0xAAAAUL) < 0);
        Assert.Equal(1u, t.Arena.SharersOf(shared));
        AssertAccounting(t, a, b);

        a.Page(new GuestPage(1))[0] = 1;                         // the last sharer leaves: the frame is freed
        Assert.Equal(1UL, a.Counters.CowBreaks);
        Assert.Equal(FrameState.Free, t.Arena.StateOf(shared));
        Assert.Equal(new SharingCounts(0, 0), t.Arena.Sharing);
        AssertAccounting(t, a, b);
    }

    [Fact]
    public void Pages_of_one_VM_share_a_frame_and_unshare_gives_each_a_private_copy()
    {
        using var t = new TestArena(64);
        GuestVm a = t.Vm("a", 8);
        a.EnableSharing();
        a.Back(new GuestPage(0), 8);                            // all zero
        HostFrame zero = a.ShareCreate(new GuestPage(0))!.Value;
        for (ulong g = 1; g < 8; g++) Assert.Equal(ShareResult.Merged, a.TryShare(new GuestPage(g), zero));
        Assert.Equal(8u, t.Arena.SharersOf(zero));
        Assert.Equal(a.PoolCount, a.HeldFrames);               // no private frame mapped (pool aside)
        Assert.Equal(8, a.SharedPages);
        AssertAccounting(t, a);

        Assert.Equal(3, a.Unshare(new GuestPage(2), 3));
        Assert.Equal(3UL, a.Counters.CowBreaks);
        Assert.Equal(5u, t.Arena.SharersOf(zero));
        Assert.Equal(GuestPageState.Backed, a.StateOf(new GuestPage(3)));
        AssertAccounting(t, a);
    }

    [Fact]
    public void Unmap_and_dispose_drop_their_sharers_and_the_last_one_frees_the_frame()
    {
        using var t = new TestArena(64);
        var (a, b) = TwoSharingVms(t);
        GuestVm c = t.Vm("c", 4);
        c.EnableSharing();
        c.Back(new GuestPage(0), 4);
        HostFrame shared = a.ShareCreate(new GuestPage(0))!.Value;
        Assert.Equal(ShareResult.Merged, b.TryShare(new GuestPage(0), shared));
        Assert.Equal(ShareResult.Merged, c.TryShare(new GuestPage(0), shared));
        Assert.Equal(3u, t.Arena.SharersOf(shared));

        HostFrame[] back = b.Unmap(new GuestPage(0), 1);         // no frame comes back for a shared page
        Assert.Empty(back);
        Assert.Equal(2u, t.Arena.SharersOf(shared));
        c.Map(new GuestPage(0), t.Arena.Allocate(1));           // remapped: its sharer is dropped too
        Assert.Equal(1u, t.Arena.SharersOf(shared));
        AssertAccounting(t, a, b, c);

        a.Dispose();
        Assert.Equal(FrameState.Free, t.Arena.StateOf(shared));
        Assert.Equal(new SharingCounts(0, 0), t.Arena.Sharing);
        AssertAccounting(t, b, c);
    }

    [Fact]
    public void Protected_poisoned_and_unbacked_pages_are_not_shared()
    {
        using var t = new TestArena(64);
        var (a, b) = TwoSharingVms(t);
        using var engine = new RecoveryEngine(a, new ProtectionPolicy { GroupSize = 4 });
        engine.Protect([new GuestPage(0), new GuestPage(1), new GuestPage(2), new GuestPage(3)], PageCategory.ReadMostly);
        Assert.Null(a.ShareCreate(new GuestPage(0)));           // protected: parity never covers a shared frame
        a.Unback(new GuestPage(7), 1);
        Assert.Null(a.ShareCreate(new GuestPage(7)));           // unbacked
        HostFrame shared = b.ShareCreate(new GuestPage(0))!.Value;
        Assert.Equal(ShareResult.NotEligible, a.TryShare(new GuestPage(1), shared));
        Assert.Equal(ShareResult.NotEligible, a.TryShare(new GuestPage(7), shared));
        Assert.Equal(ShareResult.NotEligible, a.TryShare(new GuestPage(4), new HostFrame(63))); // not a shared frame
        Assert.Equal(GuestPageState.Tracked, a.StateOf(new GuestPage(1)));
        Assert.Empty(a.ScrubParity());
        AssertAccounting(t, a, b);
    }

    [Fact]
    public void An_error_in_a_shared_frame_contains_every_sharer_in_every_VM_and_retires_the_frame()
    {
        using var t = new TestArena(64);
        var (a, b) = TwoSharingVms(t);
        Fill(a, 2, 0xBEEF);
        Fill(a, 3, 0xBEEF);
        Fill(b, 6, 0xBEEF);
        HostFrame shared = a.ShareCreate(new GuestPage(2))!.Value;
        Assert.Equal(ShareResult.Merged, a.TryShare(new GuestPage(3), shared));
        Assert.Equal(ShareResult.Merged, b.TryShare(new GuestPage(6), shared));
        var lostA = new List<GuestPage>();
        var lostB = new List<GuestPage>();
        using var ea = new RecoveryEngine(a, new ProtectionPolicy()) { Unrecoverable = g => { lostA.Add(g); return "ctx"; } };
        using var eb = new RecoveryEngine(b, new ProtectionPolicy()) { Unrecoverable = g => { lostB.Add(g); return "ctx"; } };
        var router = new ErrorRouter(t.Arena);
        router.Add(ea);
        router.Add(eb);
        MemoryErrorInjector.IntoFrame(t.Arena, shared, 100, [0xFF]);

        ErrorReport r = router.Report(shared);

        Assert.Equal(ErrorOutcome.Contained, r.Outcome);
        Assert.Equal(FrameState.Retired, t.Arena.StateOf(shared));
        Assert.Equal([new GuestPage(2), new GuestPage(3)], lostA.Order());
        Assert.Equal([new GuestPage(6)], lostB);
        Assert.True(a.IsLost(new GuestPage(3)) && b.IsLost(new GuestPage(6)));
        Assert.Equal(GuestPageState.Unbacked, b.StateOf(new GuestPage(6)));
        Assert.True(Reads(b, 6, 0));                             // never the bad bytes: a zero page
        Assert.Equal(new SharingCounts(0, 0), t.Arena.Sharing);
        AssertAccounting(t, a, b);
    }

    [Fact]
    public void A_write_to_a_shared_page_whose_frame_went_bad_never_copies_the_bad_bytes_and_contains_every_sharer()
    {
        using var t = new TestArena(64);
        var (a, b) = TwoSharingVms(t);
        Fill(a, 1, 0xBEEF);
        Fill(b, 2, 0xBEEF);
        HostFrame shared = a.ShareCreate(new GuestPage(1))!.Value;
        Assert.Equal(ShareResult.Merged, b.TryShare(new GuestPage(2), shared));
        var lostA = new List<GuestPage>();
        var lostB = new List<GuestPage>();
        using var ea = new RecoveryEngine(a, new ProtectionPolicy()) { Unrecoverable = g => { lostA.Add(g); return "ctx"; } };
        using var eb = new RecoveryEngine(b, new ProtectionPolicy()) { Unrecoverable = g => { lostB.Add(g); return "ctx"; } };
        MemoryErrorInjector.IntoFrame(t.Arena, shared, 64, [0x10]);    // silent: nobody has reported it yet

        b.Page(new GuestPage(2))[0] = 7;                         // copy-on-write: the copy fails the frame's hash

        Assert.Equal(GuestPageState.Backed, b.StateOf(new GuestPage(2)));
        Assert.True(b.IsLost(new GuestPage(2)));
        Assert.Equal(7, b.Page(new GuestPage(2))[0]);
        Assert.Equal(0, b.Page(new GuestPage(2))[64]);          // zeros, never the bad byte nor the old content
        Assert.Equal(0, b.Page(new GuestPage(2))[8]);
        Assert.Equal(1UL, b.Counters.Contained);
        eb.CollectHandlerEvents();                              // b's engine hears it and reports the frame for everyone
        Assert.Equal([new GuestPage(2)], lostB);
        Assert.Equal(FrameState.Retired, t.Arena.StateOf(shared));
        Assert.Equal(GuestPageState.Unbacked, a.StateOf(new GuestPage(1)));
        Assert.True(a.IsLost(new GuestPage(1)));
        ea.CollectHandlerEvents();
        Assert.Equal([new GuestPage(1)], lostA);
        AssertAccounting(t, a, b);
    }

    [Fact]
    public void A_write_to_a_shared_zero_page_maps_a_zero_frame_without_copying_the_shared_one()
    {
        using var t = new TestArena(64);
        var (a, b) = TwoSharingVms(t);
        HostFrame zero = a.ShareCreate(new GuestPage(0))!.Value;
        Assert.Equal(ShareResult.Merged, b.TryShare(new GuestPage(0), zero));
        MemoryErrorInjector.IntoFrame(t.Arena, zero, 100, [0xFF]);    // even a corrupt zero frame is never copied

        b.Page(new GuestPage(0))[0] = 1;

        Assert.Equal(0, b.Page(new GuestPage(0))[100]);
        Assert.False(b.IsLost(new GuestPage(0)));
        Assert.Equal(1UL, b.Counters.CowBreaks);
        AssertAccounting(t, a, b);
    }

    [Fact]
    public void An_error_in_a_shared_zero_frame_is_recovered_for_every_sharer_with_nothing_lost()
    {
        using var t = new TestArena(64);
        var (a, b) = TwoSharingVms(t);
        HostFrame zero = a.ShareCreate(new GuestPage(0))!.Value;
        for (ulong g = 0; g < 8; g++) Assert.Equal(ShareResult.Merged, b.TryShare(new GuestPage(g), zero));
        var lost = new List<GuestPage>();
        using var ea = new RecoveryEngine(a, new ProtectionPolicy()) { Unrecoverable = g => { lost.Add(g); return "ctx"; } };
        MemoryErrorInjector.IntoFrame(t.Arena, zero, 5, [0x01]);

        ErrorReport r = ea.Report(zero);

        Assert.Equal(ErrorOutcome.Recovered, r.Outcome);
        Assert.Empty(lost);
        Assert.Equal(FrameState.Retired, t.Arena.StateOf(zero));
        for (ulong g = 0; g < 8; g++)
        {
            Assert.True(Reads(b, g, 0));
            Assert.False(b.IsLost(new GuestPage(g)));
        }
        AssertAccounting(t, a, b);
    }

    // Two VMs, two guest threads each (each owns half of its VM's pages), and a host thread merging equal
    // pages of both VMs onto shared frames as fast as it can, beside a GC stress thread. Each guest writes
    // its own VM's pattern and reads it back, then a value common to both VMs (so its page can be merged)
    // and reads it back: a page must never show the other VM's pattern, or anything but what its only
    // writer wrote last.
    [Fact]
    public void Two_VMs_writing_shared_pages_from_several_threads_under_GC_stress_never_see_each_others_bytes()
    {
        const ulong pages = 64;
        const int rounds = 2000;
        using var t = new TestArena(512);
        var (a, b) = TwoSharingVms(t, pages);
        GuestVm[] vms = [a, b];
        using var watchdog = GcStress.Watchdog("shared-page isolation under GC stress", 240);
        var gc = new GcStress();
        var problems = new List<string>();
        using var stop = new CancellationTokenSource();
        long merges = 0;

        var host = new Thread(() =>
        {
            var rng = new Random(1);
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    ulong g = (ulong)rng.Next((int)pages);
                    HostFrame? shared = a.StateOf(new GuestPage(g)) == GuestPageState.Shared ? a.Translate(new GuestPage(g)) : a.ShareCreate(new GuestPage(g));
                    if (shared is HostFrame f && b.TryShare(new GuestPage(g), f) == ShareResult.Merged) Interlocked.Increment(ref merges);
                    if (rng.Next(8) == 0) b.Unshare(new GuestPage(g), 1);
                }
                catch (Exception e) { lock (problems) problems.Add($"host: {e.GetType().Name}: {e.Message}"); }
            }
        }) { IsBackground = true };
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Thread[] guests = Enumerable.Range(0, 4).Select(k => new Thread(() =>
        {
            GuestVm vm = vms[k / 2];
            ulong mine = (ulong)(k % 2);
            ulong own = 0xA000_0000_0000_0000UL | (ulong)(k / 2 + 1) << 48;
            // At least `rounds`, and on until the host has merged enough (a loaded machine starves it).
            for (int round = 0; round < rounds || (Interlocked.Read(ref merges) < 200 && clock.Elapsed < TimeSpan.FromSeconds(60)); round++)
            {
                for (ulong g = mine; g < pages; g += 2)
                {
                    ulong common = 0xC0DE_0000_0000_0000UL | g; // the same in both VMs, so pages merge
                    // The first write to a page the host may be merging is this VM's own pattern: had the
                    // merge let it land in the frame it then freed, the check would read the common value.
                    Fill(vm, g, own | (uint)round);
                    if (!Reads(vm, g, own | (uint)round)) lock (problems) problems.Add($"{vm.Name} page {g} round {round}: not its own pattern");
                    Fill(vm, g, common);
                    if (!Reads(vm, g, common)) lock (problems) problems.Add($"{vm.Name} page {g} round {round}: not the common value");
                }
            }
        }) { IsBackground = true }).ToArray();
        host.Start();
        foreach (Thread th in guests) th.Start();
        foreach (Thread th in guests) th.Join();
        stop.Cancel();
        host.Join();
        gc.Dispose();

        Assert.True(problems.Count == 0, string.Join("\n", problems.Take(10)));
        ulong cow = a.Counters.CowBreaks + b.Counters.CowBreaks;
        Assert.True(merges > 100 && cow > 100, $"{merges} merges, {cow} copy-on-write faults: the race was not exercised");
        Assert.True(gc.Collections >= 10, $"{gc.Collections} collections");
        AssertAccounting(t, a, b);
        // The last value of each page in each VM: its common value, whether shared or not.
        for (ulong g = 0; g < pages; g++)
        {
            Assert.True(Reads(a, g, 0xC0DE_0000_0000_0000UL | g));
            Assert.True(Reads(b, g, 0xC0DE_0000_0000_0000UL | g));
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Observe(byte b) => _ = b;
}
