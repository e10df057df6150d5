// The miss-curve policy (mrc), one property per test: on working-set reports of real guests touching real
// memory, pages go where they save the most faults, equal curves split by shares, min and max hold; the
// sharing credit a balloon target counts does not move on one copy-on-write break; on the built-in scenario
// allocations do not swing back and forth.
using System.Runtime.InteropServices;
using PageLab.Core.Balloon;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Scheduling;
using PageLab.Lab.Workloads;
using Xunit;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class MissCurvePolicyTests(ITestOutputHelper output)
{
    // A guest whose one process touches `workingSet` pages at random, `touchesPerPage` times a page per period,
    // for 12 periods (real loads and stores, demand faults on first touch); its last report.
    private static WorkingSetReport ReportOf(double touchesPerPage, ulong workingSet, int seed)
    {
        using var t = new TestArena(4096 + 256);
        GuestVm vm = t.Vm("g", 4096, pool: 4096);
        vm.RefillPool();
        using var os = new GuestOperatingSystem(vm);
        GuestProcess p = os.Spawn("app", 3500);
        var workload = new RandomTouchWorkload(p, _ => workingSet, (int)(touchesPerPage * workingSet));
        var rng = new Random(seed);
        WorkingSetReport r = null!;
        for (int period = 0; period < 12; period++)
        {
            workload.Step(period, rng);
            r = os.ReportWorkingSet([.. PolicyTraits.StandardReportBins]);
        }
        return r;
    }

    private static VmSignals Signals(string name, WorkingSetReport r, ulong allocation, int shares = 1000, ulong min = 0, ulong max = 4096) =>
        new(name, shares, min, max, 4096, allocation, allocation, null, r, 0, 0);

    [Fact]
    public void More_pages_go_to_the_vm_that_saves_more_faults_per_page()
    {
        // Same working set size; one is touched half a time per page per period, the other twice.
        WorkingSetReport slow = ReportOf(0.5, 1500, seed: 1), hot = ReportOf(2, 1500, seed: 2);
        var policy = new MissCurvePolicy();
        MissCurve cs = policy.CurveOf(Signals("slow", slow, 1300)), ch = policy.CurveOf(Signals("hot", hot, 1300));
        output.WriteLine($"slow curve {string.Join(" ", cs.Points.Select(p => $"({p.Pages:0},{p.Misses:0})"))}");
        output.WriteLine($"hot curve  {string.Join(" ", ch.Points.Select(p => $"({p.Pages:0},{p.Misses:0})"))}");
        // The curve's slope is the touch rate: r pages' worth of faults a period per page missing.
        Assert.InRange(cs.MissesAt(cs.BasePages + 750) / 750, 0.3, 0.7);
        Assert.InRange(ch.MissesAt(ch.BasePages + 750) / 750, 1.4, 2.6);

        var request = new AllocationRequest(2600, 0.75, 12, [Signals("slow", slow, 1300), Signals("hot", hot, 1300)]);
        ulong[] target = policy.Target(request);
        ulong[] damped = policy.Allocate(request);
        output.WriteLine($"target slow {target[0]} hot {target[1]}; allocated slow {damped[0]} hot {damped[1]}");
        // The hot VM gets its whole working set; the slow one what is left.
        Assert.True(target[1] >= 1500 + 96, $"hot got {target[1]}");
        Assert.True(damped[1] > damped[0], $"hot {damped[1]}, slow {damped[0]}");
        Assert.Equal(2600UL, target[0] + target[1]);
    }

    [Fact]
    public void Equal_curves_split_by_shares()
    {
        WorkingSetReport r = ReportOf(1, 2000, seed: 3);
        var policy = new MissCurvePolicy();
        // Nothing is allocated beyond the floors yet: the host's pages are free to hand out.
        VmSignals[] vms = [Signals("gold", r, 200, shares: 2000), Signals("bronze", r, 200, shares: 1000)];
        var request = new AllocationRequest(3000, 0.75, 12, vms);
        double basePages = policy.CurveOf(vms[0]).BasePages;
        foreach (ulong[] got in new[] { policy.Target(request), policy.Allocate(request) })
        {
            double gold = got[0] - basePages, bronze = got[1] - basePages;
            output.WriteLine($"gold {got[0]} bronze {got[1]} (base {basePages})");
            Assert.InRange(gold / bronze, 1.98, 2.02);
        }
    }

    [Fact]
    public void A_vms_floor_and_cap_hold()
    {
        // An idle VM held up by its min, a hot VM capped below its working set, on a host with room for more.
        WorkingSetReport idle = ReportOf(0.02, 2500, seed: 4), hot = ReportOf(2, 2500, seed: 5);
        var policy = new MissCurvePolicy();
        ulong idleAlloc = 2000, hotAlloc = 1800;
        for (int period = 1; period <= 6; period++)
        {
            var request = new AllocationRequest(4000, 0.75, period,
                [Signals("idle", idle, idleAlloc, min: 1500), Signals("hot", hot, hotAlloc, max: 1800)]);
            foreach (ulong[] got in new[] { policy.Target(request), policy.Allocate(request) })
            {
                Assert.True(got[0] >= 1500, $"period {period}: idle {got[0]} below its min 1500");
                Assert.True(got[1] <= 1800, $"period {period}: hot {got[1]} above its max 1800");
                Assert.True(got[0] + got[1] <= 4000);
            }
            ulong[] a = policy.Allocate(request);
            (idleAlloc, hotAlloc) = (a[0], a[1]);
        }
        Assert.Equal(1800UL, hotAlloc);                                        // it wants more: it gets its cap
    }

    // Two VMs share 300 pages of the same bytes; one write to a shared page (a copy-on-write break) changes
    // the measured credit, not the one the balloon target counts.
    [Fact]
    public void A_smoothed_sharing_credit_does_not_move_a_balloon_target_on_one_copy_on_write_break()
    {
        using var t = new TestArena(2048 + 1024);
        var scheduler = new MemoryScheduler(t.Arena, new SchedulerOptions
        {
            HostPages = 1400, BatchPages = 64, WorkConserving = false, Policy = new StaticPolicy(),
            Reclamation = Reclamation.Share | Reclamation.Balloon, ScanPagesPerStep = 1024,
        });
        var apps = new List<GuestProcess>();
        foreach (string name in new[] { "a", "b" })
        {
            GuestVm vm = t.Vm(name, 1024, pool: 64);
            vm.EnableSharing();
            var os = new GuestOperatingSystem(vm, new GuestOsOptions { LowWaterPages = 16, HighWaterPages = 48 });
            scheduler.Add(os, new BalloonApplication(os, vm.Id, shareableValue: true), 1000, 0, 1024, 700);
            GuestProcess app = os.Spawn("app", 1024);
            for (ulong p = 0; p < 300; p++) MemoryMarshal.Cast<byte, ulong>(app.Page(p)).Fill(0xC0FFEE00UL + p);
            apps.Add(app);
        }
        try
        {
            // Sharing settles, and the credit the target counts becomes a period's mean of a steady measurement.
            ulong before = ulong.MaxValue;
            for (int period = 0; period < 40 && scheduler.Vms[0].SharingCreditPages != before; period++)
            {
                before = scheduler.Vms[0].SharingCreditPages;
                for (int i = 0; i < 10; i++) scheduler.Step();
                scheduler.SamplePeriod();
            }
            for (int i = 0; i < 5; i++) scheduler.Step();
            ScheduledVm a = scheduler.Vms[0];
            Assert.True(a.Vm.SharedPages >= 250, $"a shares {a.Vm.SharedPages} pages");
            ulong target = a.BalloonTargetPages, measured = a.SharingCreditPages, credit = a.TargetSharingCreditPages;

            ulong p = Enumerable.Range(0, 300).Select(x => (ulong)x).First(x => a.Vm.StateOf(a.Os.Translate(apps[0], x)!.Value) == GuestPageState.Shared);
            apps[0].Page(p)[8]++;                                              // the break
            scheduler.Step();
            output.WriteLine($"credit measured {measured} -> {a.SharingCreditPages}, counted {credit} -> {a.TargetSharingCreditPages}; target {target} -> {a.BalloonTargetPages}");

            Assert.NotEqual(measured, a.SharingCreditPages);           // the break did change the measurement
            Assert.Equal(credit, a.TargetSharingCreditPages);
            Assert.Equal(target, a.BalloonTargetPages);
            Assert.Empty(FrameAccounting.Check(t.Arena, scheduler.Vms.Select(v => v.Vm).ToList()));
        }
        finally
        {
            foreach (ScheduledVm v in scheduler.Vms) v.Os.Dispose();
        }
    }

    // The bar of the scheduler issue: the built-in scenario paged 59,594 times when it was filed; mrc must
    // stay at 0.6 of that (35,756) and page less than esx on the same seed.
    [Fact]
    public void On_the_built_in_scenario_mrc_pages_at_most_six_tenths_of_the_first_version_and_less_than_esx()
    {
        (ulong Paging, double Churn) Run(string policy)
        {
            using var runner = new ScenarioRunner(Scenario.Default with { Policy = policy });
            RunTimeline timeline = RunTimeline.Attach(runner);
            TickSnapshot last = runner.Run().Last();
            Assert.Empty(runner.CheckAccounting());
            return (last.Vms.Aggregate(0UL, (sum, v) => sum + v.SwapIns + v.SwapOuts), timeline.FramesMovedPerTick);
        }
        var mrc = Run("mrc");
        var esx = Run("esx");
        output.WriteLine($"guest paging: mrc {mrc.Paging}, esx {esx.Paging}; churn: mrc {mrc.Churn:0.0}, esx {esx.Churn:0.0} frames/tick");
        Assert.True(mrc.Paging <= 35_756, $"mrc paged {mrc.Paging} times");
        Assert.True(mrc.Paging < esx.Paging, $"mrc {mrc.Paging}, esx {esx.Paging}");
        Assert.True(mrc.Churn <= 1.5 * esx.Churn, $"mrc churn {mrc.Churn:0.0}, esx {esx.Churn:0.0} frames/tick");
    }

    // The issue's bar for swinging: in consecutive periods, no VM whose demand (its workload's true working
    // set) stayed within 5% moves one way and back by more than a tenth of its allocation.
    [Fact]
    public void On_the_built_in_scenario_no_allocation_swings_back_while_demand_is_steady()
    {
        Scenario s = Scenario.Default with { Policy = "mrc" };
        var alloc = new Dictionary<string, List<(ulong Alloc, ulong Demand)>>();
        using (var runner = new ScenarioRunner(s))
            foreach (TickSnapshot t in runner.Run())
                if (t.Tick % s.SamplePeriodTicks == 0)
                    foreach (VmSnapshot v in t.Vms)
                        (alloc.TryGetValue(v.Name, out var l) ? l : alloc[v.Name] = new()).Add((v.AllocationPages, v.WorkingSetPages));
        foreach ((string name, var series) in alloc)
        {
            output.WriteLine($"{name}: {string.Join(" ", series.Select(x => x.Alloc))}");
            for (int k = 2; k < series.Count; k++)
            {
                long d1 = (long)series[k - 1].Alloc - (long)series[k - 2].Alloc, d2 = (long)series[k].Alloc - (long)series[k - 1].Alloc;
                ulong lo = series.Skip(k - 2).Take(3).Min(x => x.Demand), hi = series.Skip(k - 2).Take(3).Max(x => x.Demand);
                bool steady = hi <= lo * 1.05;
                if (!steady || Math.Sign(d1) * Math.Sign(d2) >= 0) continue;
                Assert.True(Math.Min(Math.Abs(d1), Math.Abs(d2)) <= 0.1 * series[k - 1].Alloc,
                    $"{name} swung {d1:+#;-#;0} then {d2:+#;-#;0} pages around {series[k - 1].Alloc} (periods {k - 2}..{k})");
            }
        }
    }
}
