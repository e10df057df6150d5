// The orders and corners the fault engine must survive (each a regression test for a failure seen on
// the engine before frame ownership moved into it, at commit 686ef20): writers racing a parity page,
// guests touching poisoned pages before their report, an empty pool and a full arena, scrubs before
// reports, poisoned frames leaving a VM, Dispose racing calls, groups freed.
using System.Runtime.CompilerServices;
using PageLab.Core;
using PageLab.Core.Faults;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Recovery;
using static PageLab.Tests.RecoveryTests;

namespace PageLab.Tests;

public class EngineRobustnessTests
{
    private static GuestPage[] Range(ulong first, ulong count) =>
        Enumerable.Range((int)first, (int)count).Select(g => new GuestPage((ulong)g)).ToArray();

    private static GuestVm Filled(TestArena t, string name, ulong pages, uint pool = 16)
    {
        GuestVm vm = t.Vm(name, pages, pool);
        vm.RefillPool();
        vm.Back(new GuestPage(0), pages);
        for (ulong g = 0; g < pages; g++) FillPattern(vm.Page(new GuestPage(g)), g);
        return vm;
    }

    [Fact]
    public void Four_writers_on_one_parity_page_with_a_protect_and_scrub_loop_never_break_parity()
    {
        using var t = new TestArena(256);
        GuestVm vm = Filled(t, "race", 16);
        var engine = new RecoveryEngine(vm, new ProtectionPolicy { GroupSize = 8 });
        engine.Protect(Range(0, 8), PageCategory.ReadMostly);
        using var gc = new GcStress();
        int broken = 0, passes = 0;
        // Bounded by progress, not wall time: under Wine beside a heavy build 1,000 write faults took over
        // 300 s, while a deadlocked fault path makes none at all.
        using var watchdog = GcStress.StallWatchdog("writers on one parity page",
            () => (long)vm.Counters.TrackedWrites + Volatile.Read(ref passes));
        using var stop = new CancellationTokenSource();
        var writers = Enumerable.Range(0, 4).Select(w => new Thread(() =>
        {
            long n = 0;
            while (!stop.IsCancellationRequested)
            {
                Span<byte> page = vm.Page(new GuestPage(3));
                page[w * 8 + (int)(n % 8)] = (byte)n;   // each writer its own bytes: a real write fault when covered
                Observe(page[w * 8]);
                n++;
            }
        })).ToList();
        writers.ForEach(w => w.Start());
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(3) || vm.Counters.TrackedWrites < 1000)
        {
            engine.Reprotect(coldOnly: false);
            broken += vm.ScrubParity().Count;
            Interlocked.Increment(ref passes);
        }
        stop.Cancel();
        writers.ForEach(w => w.Join());

        Assert.Equal(0, broken);
        Assert.True(passes > 100, $"{passes} protect/scrub passes");
        // Parity that stayed true can rebuild a sibling bit-exact.
        engine.Reprotect(coldOnly: false);
        HostFrame bad = MemoryErrorInjector.IntoPage(vm, new GuestPage(5), 0, [0xFF, 0x0F])!.Value;
        Assert.Equal(ErrorOutcome.Recovered, engine.Report(bad).Outcome);
        Assert.True(HasPattern(vm.Page(new GuestPage(5)), 5));
    }

    [Fact]
    public void A_guest_touching_a_poisoned_unprotected_page_first_reads_zero_and_its_context_is_ended()
    {
        using var t = new TestArena(128);
        GuestVm vm = Filled(t, "unprotected", 8);
        var engine = new RecoveryEngine(vm);
        var ended = new List<GuestPage>();
        engine.Unrecoverable = g => { ended.Add(g); return $"context of {g}"; };
        HostFrame bad = MemoryErrorInjector.IntoPage(vm, new GuestPage(2), 100, [0x81])!.Value;

        Span<byte> page = vm.Page(new GuestPage(2));
        Assert.True(page.IndexOfAnyExcept((byte)0) < 0);          // a zero frame, never the bad bytes
        Assert.True(vm.IsLost(new GuestPage(2)));
        Assert.Equal(1UL, vm.Counters.Contained);
        Assert.Equal(FrameState.Retired, t.Arena.StateOf(bad));
        Assert.Equal(ErrorOutcome.Contained, engine.Report(bad).Outcome);
        Assert.Equal([new GuestPage(2)], ended);                   // ended once, not once per notice
        Assert.True(HasPattern(vm.Page(new GuestPage(3)), 3));      // the rest runs on
        Assert.Empty(FrameAccounting.Check(t.Arena, [vm]));
    }

    [Fact]
    public void A_poisoned_protected_page_touched_first_is_recovered_with_an_empty_pool_and_no_free_frame()
    {
        using var t = new TestArena(64);
        GuestVm vm = t.Vm("full", 32, pool: 4);
        vm.Back(new GuestPage(0), 32);
        for (ulong g = 0; g < 32; g++) FillPattern(vm.Page(new GuestPage(g)), g);
        var engine = new RecoveryEngine(vm, new ProtectionPolicy { GroupSize = 8 });
        engine.Protect(Range(0, 16), PageCategory.ReadMostly);
        HostFrame[] hoard = t.Arena.Allocate((uint)t.Arena.Counts.Free);  // no pool frame, no free frame
        Assert.Equal(0, vm.PoolCount);
        HostFrame bad = MemoryErrorInjector.IntoPage(vm, new GuestPage(4), 8, [0xFF, 0xFF, 0xFF])!.Value;

        Assert.True(HasPattern(vm.Page(new GuestPage(4)), 4));     // recovered in the handler
        Assert.Equal(1UL, vm.Counters.HandlerRecoveries);
        Assert.True(vm.Counters.HostSwapOuts >= 1);               // its frame came from a host-swapped page
        Assert.Equal(ErrorOutcome.Recovered, engine.Report(bad).Outcome);
        for (ulong g = 0; g < 32; g++) Assert.True(HasPattern(vm.Page(new GuestPage(g)), g), $"page {g}");
        Assert.Empty(FrameAccounting.Check(t.Arena, [vm], hoard.Select(f => f.Value).ToHashSet()));
    }

    [Fact]
    public void A_guest_writing_every_page_while_the_host_has_no_free_frame_completes_through_host_swap()
    {
        using var t = new TestArena(96);
        GuestVm vm = t.Vm("swapper", 512, pool: 8);
        vm.RefillPool();
        HostFrame[] hoard = t.Arena.Allocate((uint)t.Arena.Counts.Free - 24);  // the VM can reach 32 frames
        using var gc = new GcStress();
        using var watchdog = GcStress.StallWatchdog("writing every page with no free frame", // progress, not wall time
            () => (long)(vm.Counters.HostSwapOuts + vm.Counters.HostSwapIns + vm.Counters.DemandFaults));
        var threads = Enumerable.Range(0, 2).Select(w => new Thread(() =>
        {
            for (ulong g = (ulong)w; g < 512; g += 2) FillPattern(vm.Page(new GuestPage(g)), g + 1000);
        })).ToList();
        threads.ForEach(x => x.Start());
        threads.ForEach(x => x.Join());

        for (ulong g = 0; g < 512; g++) Assert.True(HasPattern(vm.Page(new GuestPage(g)), g + 1000), $"page {g}");
        FaultCounters c = vm.Counters;
        Assert.True(c.HostSwapOuts >= 512 - 32, $"{c.HostSwapOuts} host swap-outs");
        Assert.True(c.HostSwapIns >= 512 - 32, $"{c.HostSwapIns} host swap-ins");
        Assert.True(vm.HeldFrames <= 32, $"{vm.HeldFrames} frames held");
        Assert.Empty(FrameAccounting.Check(t.Arena, [vm], hoard.Select(f => f.Value).ToHashSet()));
    }

    [Fact]
    public void A_vm_with_nothing_to_swap_out_on_a_full_arena_takes_another_vms_page_by_host_swap()
    {
        using var t = new TestArena(64);
        GuestVm a = Filled(t, "a", 48);                                 // with its pool: all 64 frames
        GuestVm b = t.Vm("b", 16, pool: 1);                            // nothing of its own to swap out
        Assert.Equal(0, t.Arena.Counts.Free);

        Assert.True(b.Page(new GuestPage(3)).IndexOfAnyExcept((byte)0) < 0, "b's new page reads zero, not a's bytes");
        FillPattern(b.Page(new GuestPage(3)), 77);

        Assert.Equal(1UL, b.Counters.TakenFromOthers);
        Assert.Equal(1UL, a.Counters.HostSwapOuts);
        for (ulong g = 0; g < 48; g++) Assert.True(HasPattern(a.Page(new GuestPage(g)), g), $"a's page {g}");
        Assert.True(HasPattern(b.Page(new GuestPage(3)), 77));
        Assert.Empty(FrameAccounting.Check(t.Arena, [a, b]));
    }

    // Six one-page VMs on three frames: every fault of each must take another VM's frame, while the others
    // fault too and hold their own locks (tried, never waited for: the fault re-runs instead). All six touch
    // their page every round and only three pages fit, so at least three frames change hands per round.
    [Fact]
    public void Vms_taking_each_others_frames_at_once_on_a_full_arena_keep_every_byte_under_gc_stress()
    {
        const int vms = 6, frames = 3, rounds = 600;
        using var t = new TestArena(frames);
        GuestVm[] guests = Enumerable.Range(0, vms).Select(i => t.Vm($"one{i}", 1, pool: 1)).ToArray();
        using var gc = new GcStress();
        using var watchdog = GcStress.Watchdog("one-page VMs on three frames", 240);
        using var roundDone = new Barrier(vms);
        var wrong = new int[vms];
        var failures = new List<string>();
        var threads = guests.Select((vm, i) => new Thread(() =>
        {
            for (ulong n = 1; n <= rounds; n++)
            {
                try
                {
                    FillPattern(vm.Page(new GuestPage(0)), (ulong)i * 1_000_000 + n);
                    Thread.Yield();                                    // let the others take the frame away
                    if (!HasPattern(vm.Page(new GuestPage(0)), (ulong)i * 1_000_000 + n)) wrong[i]++;
                }
                catch (Exception e) { lock (failures) failures.Add($"{vm.Name} round {n}: {e.GetType().Name}: {e.Message}"); }
                roundDone.SignalAndWait();
            }
        })).ToList();
        threads.ForEach(x => x.Start());
        threads.ForEach(x => x.Join());

        Assert.Empty(failures);
        Assert.All(wrong, w => Assert.Equal(0, w));
        long taken = guests.Sum(vm => (long)vm.Counters.TakenFromOthers);
        Assert.True(taken >= (long)(vms - frames) * (rounds - 1), $"{taken} frames taken from other VMs");
        Assert.Empty(FrameAccounting.Check(t.Arena, guests));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A_scrub_and_a_report_recover_the_page_in_either_order(bool scrubFirst)
    {
        using var t = new TestArena(256);
        GuestVm vm = Filled(t, "order", 32);
        var engine = new RecoveryEngine(vm, new ProtectionPolicy { GroupSize = 8 });
        engine.Protect(Range(0, 16), PageCategory.ReadMostly);
        HostFrame bad = MemoryErrorInjector.IntoPage(vm, new GuestPage(6), 0, new byte[64].Select(_ => (byte)0x5A).ToArray())!.Value;

        ErrorOutcome first = scrubFirst ? engine.Scrub().Single().Outcome : engine.Report(bad).Outcome;
        ErrorOutcome second = scrubFirst ? engine.Report(bad).Outcome : (engine.Scrub().SingleOrDefault()?.Outcome ?? ErrorOutcome.Recovered);

        Assert.Equal((ErrorOutcome.Recovered, ErrorOutcome.Recovered), (first, second));
        Assert.True(HasPattern(vm.Page(new GuestPage(6)), 6));
        Assert.Empty(vm.ScrubParity());
        Assert.Equal(FrameState.Retired, t.Arena.StateOf(bad));
        // The parity is still right: a sibling's error is rebuilt too.
        HostFrame bad2 = MemoryErrorInjector.IntoPage(vm, new GuestPage(7), 0, [1])!.Value;
        Assert.Equal(ErrorOutcome.Recovered, engine.Report(bad2).Outcome);
        Assert.True(HasPattern(vm.Page(new GuestPage(7)), 7));
    }

    [Fact]
    public void A_parity_scrub_never_rebuilds_parity_from_a_poisoned_member()
    {
        using var t = new TestArena(256);
        GuestVm vm = Filled(t, "scrub", 16);
        var engine = new RecoveryEngine(vm, new ProtectionPolicy { GroupSize = 8 });
        engine.Protect(Range(0, 8), PageCategory.ReadMostly);
        HostFrame bad = MemoryErrorInjector.IntoPage(vm, new GuestPage(1), 0, [0xFF])!.Value;

        Assert.Empty(vm.ScrubParity());                            // the group is left until page 1 is recovered
        Assert.Equal(ErrorOutcome.Recovered, engine.Report(bad).Outcome);
        Assert.True(HasPattern(vm.Page(new GuestPage(1)), 1));
    }

    [Fact]
    public void A_poisoned_frame_leaves_its_vm_only_to_be_retired()
    {
        using var t = new TestArena(128);
        GuestVm vm = Filled(t, "leave", 8);
        HostFrame bad = MemoryErrorInjector.IntoPage(vm, new GuestPage(3), 0, [0xFF])!.Value;
        HostFrame other = MemoryErrorInjector.IntoPage(vm, new GuestPage(5), 0, [0xFF])!.Value;

        Assert.Empty(vm.Unmap(new GuestPage(3), 1));               // no frame handed on
        Assert.Equal(FrameState.Retired, t.Arena.StateOf(bad));
        long free = t.Arena.Counts.Free;
        vm.Dispose();                                              // page 5 still poisoned
        Assert.Equal(FrameState.Retired, t.Arena.StateOf(other));
        Assert.Equal(free + 6 + 16, t.Arena.Counts.Free);          // 6 good pages and the pool came back
        Assert.Equal(2, t.Arena.Counts.Retired);
    }

    [Fact]
    public void Dispose_racing_calls_makes_them_throw_ObjectDisposedException_and_never_reach_another_vm()
    {
        using var gc = new GcStress();
        for (int round = 0; round < 40; round++)
        {
            using var t = new TestArena(4096);
            GuestVm vm = Filled(t, $"gone{round}", 32);
            var engine = new RecoveryEngine(vm, new ProtectionPolicy { GroupSize = 4 });
            engine.Protect(Range(0, 16), PageCategory.ReadMostly);
            var unexpected = new List<Exception>();
            int injections = 0; // each retires a frame for good: bounded, so a slow host cannot run the arena dry
            var callers = Enumerable.Range(0, 2).Select(c => new Thread(() =>
            {
                var rng = new Random(c + round * 7);
                try
                {
                    while (true)
                    {
                        var g = new GuestPage((ulong)rng.Next(32));
                        switch (rng.Next(6))
                        {
                            case 0: _ = vm.StateOf(g); _ = vm.Translate(g); break;
                            case 1: _ = vm.Counters; _ = vm.MappingCount; break;
                            case 2: vm.Sample([g]); break;
                            case 3: engine.Reprotect(coldOnly: false); break;
                            case 4: engine.Scrub(); break;
                            case 5:
                                if (Interlocked.Increment(ref injections) < 1000 &&
                                    MemoryErrorInjector.IntoPage(vm, g, 0, [1], onlyIfProtected: true) is HostFrame f) engine.Report(f);
                                break;
                        }
                    }
                }
                catch (ObjectDisposedException) { }
                catch (Exception e) { lock (unexpected) unexpected.Add(e); }
            })).ToList();
            callers.ForEach(c => c.Start());
            Thread.Sleep(5);
            vm.Dispose();
            callers.ForEach(c => c.Join());
            Assert.Empty(unexpected);
            // The next VM may take the same engine slot; the old one's id is stale and refused.
            GuestVm next = Filled(t, $"next{round}", 8);
            Assert.Throws<ObjectDisposedException>(() => MemoryErrorInjector.IntoPage(vm, new GuestPage(1), 0, [1]));
            Assert.True(HasPattern(next.Page(new GuestPage(1)), 1));
            engine.Dispose();
            next.Dispose();
            Assert.Equal(0, t.Arena.Counts.Held + t.Arena.Counts.Guest + t.Arena.Counts.Parity);
        }
    }

    [Fact]
    public void Parity_groups_are_freed_so_protect_cycles_never_fill_the_group_table()
    {
        using var t = new TestArena(128);
        GuestVm vm = Filled(t, "cycles", 16);
        for (int i = 0; i < 500; i++)
        {
            using var engine = new RecoveryEngine(vm, new ProtectionPolicy { GroupSize = 4 });
            engine.Protect(Range(0, 16), PageCategory.ReadMostly);
            Assert.Equal(4, engine.Groups);
            vm.Page(new GuestPage((ulong)(i % 16)))[0] ^= 0;           // a write fault now and then
        }
        Assert.Equal(0, t.Arena.Counts.Parity);
        Assert.Empty(FrameAccounting.Check(t.Arena, [vm]));
    }

    [Fact]
    public void A_stale_region_id_is_refused_by_the_engine_itself()
    {
        using var t = new TestArena(64);
        GuestVm a = t.Vm("a", 4);
        int staleId;
        using (RegionUse use = a.Use()) staleId = use.Id;
        a.Dispose();
        GuestVm b = Filled(t, "b", 4);
        // Straight to the engine, past every managed check: the generation in the id no longer matches.
        Assert.Equal(PageLab.Native.Interop.PageLab.ENOREGION, PageLab.Native.Interop.PageLab.PoolCount(staleId));
        Assert.Equal(PageLab.Native.Interop.PageLab.ENOREGION, PageLab.Native.Interop.PageLab.RegionDestroy(staleId));
        Assert.True(HasPattern(b.Page(new GuestPage(2)), 2));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Observe(byte value) => GC.KeepAlive(value);

    [Fact]
    public void A_fault_past_the_mapping_budget_with_nothing_to_swap_ends_a_named_context_and_keeps_the_budget()
    {
        using var t = new TestArena(256);
        using GuestVm vm = GuestVm.Create(t.Arena, "fragmented", 128, poolCapacity: 4, hostSwap: false);
        var engine = new RecoveryEngine(vm);
        var ended = new List<GuestPage>();
        engine.Unrecoverable = g => { ended.Add(g); return $"context of {g}"; };
        // Pages 0, 2, .., 30 on frames that never follow on: each page is a mapping of its own.
        HostFrame[] frames = t.Arena.Allocate(32);
        for (int i = 0; i < 16; i++)
        {
            vm.Map(new GuestPage((ulong)(2 * i)), [frames[2 * i]]);
            FillPattern(vm.Page(new GuestPage((ulong)(2 * i))), (ulong)i);
        }
        t.Arena.Release(Enumerable.Range(0, 16).Select(i => frames[2 * i + 1]).ToArray());
        long saved = FaultEngine.MapBudget;
        FaultEngine.MapBudget = FaultEngine.MapsInUse;
        try
        {
            // A touch in a wide hole needs two more mappings than the budget has, and the VM has no host
            // swap: the fault is resolved (it used to be charged past the budget, then die at
            // vm.max_map_count) by giving another page up, whose context ends.
            vm.Page(new GuestPage(100))[7] = 42;
            Assert.True(FaultEngine.MapsInUse <= FaultEngine.MapBudget, $"{FaultEngine.MapsInUse} mappings, budget {FaultEngine.MapBudget}");
            Assert.Equal(42, vm.Page(new GuestPage(100))[7]);
            engine.CollectHandlerEvents();
            Assert.NotEmpty(ended);
            for (int i = 0; i < 16; i++)
            {
                var g = new GuestPage((ulong)(2 * i));
                if (ended.Contains(g)) Assert.True(vm.IsLost(g), $"{g} ended but not flagged lost");
                else Assert.True(HasPattern(vm.Page(g), (ulong)i), $"{g} changed without being flagged lost");
            }
            Assert.Equal(GuestMemoryTests.KernelMappings(vm), vm.MappingCount);
            Assert.Empty(FrameAccounting.Check(t.Arena, [vm]));
        }
        finally
        {
            FaultEngine.MapBudget = saved;
        }
    }
}

public class EngineLifetimeRaceTests
{
    [Fact]
    public void Creating_vms_while_others_are_destroyed_never_reuses_a_dying_slot()
    {
        using var t = new TestArena(4096);
        using var gc = new GcStress();
        var unexpected = new List<string>();
        var threads = Enumerable.Range(0, 2).Select(w => new Thread(() =>
        {
            for (int i = 0; i < 300; i++)
            {
                GuestVm vm = GuestVm.Create(t.Arena, $"churn{w}-{i}", 8, 4, hostSwap: false);
                try
                {
                    vm.RefillPool(4);
                    vm.Page(new GuestPage((ulong)(i % 8)))[7] = (byte)i;        // a real demand fault in the new region
                    if (vm.Page(new GuestPage((ulong)(i % 8)))[7] != (byte)i) lock (unexpected) unexpected.Add($"{vm.Name} lost its byte");
                }
                catch (Exception e) { lock (unexpected) unexpected.Add($"{vm.Name}: {e.GetType().Name}: {e.Message}"); }
                finally { vm.Dispose(); }
            }
        })).ToList();
        threads.ForEach(x => x.Start());
        threads.ForEach(x => x.Join());
        Assert.Empty(unexpected);
        Assert.Equal(0, t.Arena.Counts.Guest + t.Arena.Counts.Held);
    }

    [Fact]
    public void A_sample_list_kept_in_the_vms_own_guest_memory_does_not_deadlock()
    {
        using var t = new TestArena(64);
        GuestVm vm = t.Vm("self", 16, pool: 4);
        vm.Back(new GuestPage(0), 16);
        using var watchdog = GcStress.Watchdog("a sample list in guest memory");
        // The list of pages to sample lives in page 0, which it also samples.
        Span<GuestPage> list = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, GuestPage>(vm.Page(new GuestPage(0)))[..4];
        list[0] = new GuestPage(0); list[1] = new GuestPage(3); list[2] = new GuestPage(5); list[3] = new GuestPage(7);
        Assert.Equal(4, vm.Sample(list));
        Assert.Equal(GuestPageState.Sampled, vm.StateOf(new GuestPage(5)));
    }
}

public class DoublePagingTests
{
    [Fact]
    public void A_guest_paging_out_a_page_the_host_swapped_keeps_its_content()
    {
        using var t = new TestArena(512);
        GuestVm vm = t.Vm("double", 128, pool: 128);
        vm.RefillPool();
        using var os = new GuestOperatingSystem(vm, new GuestOsOptions { LowWaterPages = 4, HighWaterPages = 8 });
        GuestProcess app = os.Spawn("app", 64);
        for (ulong v = 0; v < 64; v++) FillPattern(app.Page(v), v + 77);
        int swapped = vm.HostSwapOut(1000);                          // every backed page out to the host swap file
        Assert.True(swapped >= 64, $"{swapped} pages host-swapped");

        os.Reclaim(128);                                             // the guest pages out pages the host swapped

        Assert.True(os.DoublePagings >= 32, $"{os.DoublePagings} double pagings");
        Assert.True(os.Stats.SwapOuts >= 32, $"{os.Stats.SwapOuts} guest swap-outs");
        for (ulong v = 0; v < 64; v++) Assert.True(HasPattern(app.Page(v), v + 77), $"vpn {v}");
    }
}
