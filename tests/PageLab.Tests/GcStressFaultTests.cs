// Remaps and write-protect faults taken by managed code while another thread allocates and forces
// full GCs: no deadlock (a watchdog fails the run instead), bytes and parity stay right. Runs on the
// Linux backend and on the Windows backend alike.
using System.Runtime.CompilerServices;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core.Recovery;

namespace PageLab.Tests;

public class GcStressFaultTests
{
    // Each test runs until it has done its iterations *and* seen this many forced collections: a fast
    // run (or a GC thread the scheduler starved) takes more iterations instead of failing the count.
    // The watchdog still fails the run if neither finishes.
    private const int MinCollections = 11;

    [Fact]
    public void Write_faults_on_parity_pages_under_GC_stress_keep_parity_true()
    {
        using var t = new TestArena(256);
        GuestVm vm = t.Vm("wp", 32, pool: 16);
        vm.Back(new GuestPage(0), 32);
        var engine = new RecoveryEngine(vm);
        GuestPage[] pages = Enumerable.Range(0, 16).Select(i => new GuestPage((ulong)i)).ToArray();
        engine.Protect(pages, PageCategory.ReadMostly);
        using var gc = new GcStress();
        using var watchdog = GcStress.StallWatchdog("write faults under GC stress", () => (long)vm.Counters.TrackedWrites); // progress, not wall time

        int rounds = 0;
        for (; rounds < 600 || gc.Collections < MinCollections; rounds++)
        {
            for (int i = 0; i < 8; i++)
            {
                Span<byte> page = vm.Page(pages[(rounds + i) % 16]);
                page[i] = (byte)rounds;                                    // a real write fault, then a call
                Observe(page[i]);
            }
            engine.Reprotect(coldOnly: false);                                           // covered (read-only) again
        }

        Assert.True(vm.Counters.TrackedWrites >= 8UL * (ulong)rounds, $"{vm.Counters.TrackedWrites} write faults in {rounds} rounds");
        Assert.Empty(vm.ScrubParity());
        Assert.True(gc.Collections >= MinCollections, $"{gc.Collections} forced collections");
        HostFrame bad = MemoryErrorInjector.IntoPage(vm, pages[3], 0, [0xFF, 0xFF])!.Value;
        byte[] before = t.Arena.FrameBytes(bad).ToArray();
        before[0] ^= 0xFF;
        before[1] ^= 0xFF;
        Assert.Equal(ErrorOutcome.Recovered, engine.Report(bad).Outcome);
        Assert.Equal(before, vm.Page(pages[3]).ToArray());
    }

    [Fact]
    public void Remaps_under_GC_stress_show_the_new_frame_every_time()
    {
        using var t = new TestArena(64);
        GuestVm vm = t.Vm("remap", 8, pool: 4);
        HostFrame[] frames = t.Arena.Allocate(2);
        t.Arena.FrameBytes(frames[0]).Fill(0xA1);
        t.Arena.FrameBytes(frames[1]).Fill(0xB2);
        vm.Map(new GuestPage(2), [frames[0]]);
        HostFrame spare = frames[1];
        using var gc = new GcStress();
        long done = 0;
        using var watchdog = GcStress.StallWatchdog("remaps under GC stress", () => Volatile.Read(ref done)); // progress, not wall time

        for (int i = 0; i < 3_000 || gc.Collections < MinCollections; i++)
        {
            Volatile.Write(ref done, i);
            HostFrame now = spare;
            spare = vm.Map(new GuestPage(2), [spare])[0];
            byte expect = now == frames[0] ? (byte)0xA1 : (byte)0xB2;
            Span<byte> page = vm.Page(new GuestPage(2));
            Assert.Equal(expect, page[i % page.Length]);
            Observe(page[0]);
        }
        Assert.True(gc.Collections >= MinCollections, $"{gc.Collections} forced collections");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Observe(byte value) => GC.KeepAlive(value);
}
