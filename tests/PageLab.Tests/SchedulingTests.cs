// The scheduler on real memory: working-set sampling through real faults, shares with an idle tax,
// memory moving from an idle VM to an active one, and guest (not host) paging doing the work.
using CsCheck;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Scheduling;
using PageLab.Lab.Scenarios;
using PageLab.Lab.Observation;

namespace PageLab.Tests;

public class SchedulingTests
{
    [Theory]
    [InlineData(0.25)]
    [InlineData(0.75)]
    public void The_working_set_estimate_tracks_a_known_active_fraction_within_ten_points(double active)
    {
        using var t = new TestArena(4096);
        GuestVm vm = t.Vm("ws", 3072, pool: 3072);
        vm.RefillPool();
        using var os = new GuestOperatingSystem(vm);
        GuestProcess p = os.Spawn("app", 2048);
        for (ulong v = 0; v < 2048; v++) p.Page(v)[0] = 1;                  // all backed
        var ws = new WorkingSetEstimator(vm, new Random(7), samplePages: 100);
        ulong hot = (ulong)(2048 * active);
        var estimates = new List<double>();

        for (int period = 0; period < 12; period++)
        {
            ws.NextPeriod();
            for (ulong v = 0; v < hot; v++) p.Page(v)[1]++;                  // the active set, every period
            if (period >= 4) estimates.Add(ws.ActiveFraction);
        }

        // The backed pages are the 2048 of the process plus a few page-table-free guest pages: the
        // true fraction is hot / backed.
        double truth = (double)hot / vm.Mappings().Sum(m => (double)m.Pages.Length);
        Assert.All(estimates, e => Assert.InRange(e, truth - 0.10, truth + 0.10));
        Assert.True(vm.Counters.SampleTouches > 0);
    }

    [Fact]
    public void Allocation_policy_stays_within_the_host_and_each_vms_bounds_and_taxes_idle_memory()
    {
        Gen.Select(Gen.Int[1, 5000].Array[2, 6], Gen.Double[0, 1].Array[6], Gen.ULong[100, 100_000]).Sample((shares, fractions, host) =>
        {
            var vms = shares.Select((s, i) => new VmDemand(s, fractions[i], (ulong)(i * 10), 50_000)).ToList();
            ulong mins = vms.Aggregate(0UL, (a, v) => a + v.MinPages);
            ulong[] t = ShareAllocation.Targets(vms, host);
            ulong sum = t.Aggregate(0UL, (a, x) => a + x);
            bool bounds = t.Select((x, i) => x >= vms[i].MinPages && x <= vms[i].MaxPages).All(b => b);
            ulong maxTotal = vms.Aggregate(0UL, (a, v) => a + v.MaxPages);
            return bounds && sum <= Math.Max(host, mins) && (sum == Math.Min(host, maxTotal) || host < mins);
        });

        ulong[] two = ShareAllocation.Targets([new VmDemand(1000, 0.0, 0, 10_000), new VmDemand(1000, 1.0, 0, 10_000)], 5000);
        Assert.Equal(1000UL, two[0], 1UL);                                     // idle pays k = 4 times the shares
        Assert.Equal(4000UL, two[1], 1UL);
        var e = Assert.Throws<ArgumentException>(() => ShareAllocation.Targets([new VmDemand(1, 0, 10, 5)], 100));
        Assert.Contains("min 10 pages > max 5", e.Message);
    }

    [Fact]
    public void The_scheduler_moves_memory_from_an_idle_vm_to_an_active_one_and_the_active_vm_pages_less()
    {
        Scenario s = new()
        {
            Name = "idle-vs-active", HostPages = 2048, Ticks = 150, SamplePeriodTicks = 5,
            Vms =
            [
                new VmSpec { Name = "idle", Pages = 1536, Workload = new WorkloadSpec { Kind = "idle", Pages = 1000, TouchesPerTick = 5 } },
                new VmSpec { Name = "active", Pages = 1536, Workload = new WorkloadSpec { Kind = "active", Pages = 1300, TouchesPerTick = 300 } },
            ],
        };
        (List<VmSnapshot> fixedEnd, _, List<string> fixedProblems, _) = Run(s with { Policy = "static" });
        (List<VmSnapshot> end, long moved, List<string> problems, (long swapFileBytes, ulong idleResidentDrop)) = Run(s);

        VmSnapshot idle = end.Single(v => v.Name == "idle"), active = end.Single(v => v.Name == "active");
        VmSnapshot activeFixed = fixedEnd.Single(v => v.Name == "active");
        Assert.True(idle.AllocationPages < 1024 && active.AllocationPages > 1024, $"idle {idle.AllocationPages}, active {active.AllocationPages}");
        Assert.True(moved > 200, $"moved {moved} frames");
        Assert.True(active.SwapIns < activeFixed.SwapIns * 0.7, $"active swap-ins {active.SwapIns} scheduled vs {activeFixed.SwapIns} static");
        // The idle guest paged its own process out to fill its balloon: real writes to its swap file.
        Assert.True(idle.SwapOuts > 100, $"idle swap-outs {idle.SwapOuts}");
        Assert.True(swapFileBytes >= (long)idle.SwapOuts / 4 * 4096, $"swap file {swapFileBytes} bytes");
        Assert.True(idleResidentDrop > 100, $"idle process resident pages fell by {idleResidentDrop}");
        Assert.Empty(fixedProblems);
        Assert.Empty(problems);
    }

    private static (List<VmSnapshot> End, long Moved, List<string> Problems, (long, ulong) Idle) Run(Scenario s)
    {
        using var runner = new ScenarioRunner(s);
        runner.Boot();
        ScheduledVm idle = runner.Scheduler.Vms[0];
        runner.Advance();                                          // the idle workload allocates at tick 1
        ulong residentAfterAlloc = idle.Os.Processes.Single(p => p.Name == "idle").Resident;
        var problems = new List<string>();
        while (runner.Tick < s.Ticks)
        {
            runner.Advance();
            if (runner.Tick % 25 == 0) problems.AddRange(runner.CheckAccounting());
        }
        problems.AddRange(runner.CheckAccounting());
        long swapBytes = idle.Os.Swap.Bytes;
        ulong drop = residentAfterAlloc - idle.Os.Processes.Single(p => p.Name == "idle").Resident;
        return (runner.Snapshot(), runner.Scheduler.TransferredFrames, problems, (swapBytes, drop));
    }
}

public class EsxAllocationTests
{
    [Fact]
    public void Min_is_a_floor_on_the_proportional_share_not_a_bonus_as_in_esx()
    {
        // Shares 2:1, min 1024 each, 4096 pages, equally active: ESX gives 2731 / 1365 (the share of each
        // is above its min, so the mins do not bind). Before this rule PageLab gave 2390 / 1706.
        ulong[] t = ShareAllocation.Targets([new VmDemand(2000, 0.5, 1024, 4096), new VmDemand(1000, 0.5, 1024, 4096)], 4096);
        Assert.Equal([2731UL, 1365UL], t);
        // A min binds only when the share falls below it; the rest is shared by the others' claims.
        ulong[] floor = ShareAllocation.Targets([new VmDemand(9000, 0.5, 0, 4096), new VmDemand(1000, 0.5, 1024, 4096)], 4096);
        Assert.Equal([3072UL, 1024UL], floor);
        // A max caps the share; the excess goes to the others.
        ulong[] cap = ShareAllocation.Targets([new VmDemand(1000, 0.5, 0, 1000), new VmDemand(1000, 0.5, 0, 8192)], 4096);
        Assert.Equal([1000UL, 3096UL], cap);
    }

    [Fact]
    public void Allocations_follow_the_papers_formula_for_any_shares_and_activity()
    {
        CsCheck.Gen.Select(CsCheck.Gen.Int[1, 5000].Array[2, 6], CsCheck.Gen.Double[0, 1].Array[6], CsCheck.Gen.UInt[1000, 100_000])
            .Sample((shares, f, host) =>
            {
                var vms = shares.Select((s, i) => new VmDemand(s, f[i], 0, host)).ToList();
                ulong[] t = ShareAllocation.Targets(vms, host);
                double k = 1 / (1 - ShareAllocation.DefaultIdleTax);
                double[] w = vms.Select(v => v.Shares / (v.ActiveFraction + k * (1 - v.ActiveFraction))).ToArray();
                double sum = w.Sum();
                // No bound binds: each VM gets S·w_i/Σw, within a page of rounding and 1%.
                return t.Aggregate(0UL, (a, b) => a + b) == host &&
                       t.Select((x, i) => Math.Abs(x - host * w[i] / sum) <= Math.Max(1.0, 0.01 * host * w[i] / sum)).All(ok => ok);
            });
    }
}

public class ActiveFractionBaseTests
{
    [Fact]
    public void A_vm_that_holds_a_quarter_of_its_allocation_is_a_quarter_active_on_it_not_all()
    {
        // Every held page active (sampled f = 1), 1024 held of a 4096-page allocation: 0.25 of the
        // allocation is active. Applying the sampled f to the whole allocation said 1.0.
        Assert.Equal(0.25, VmSignals.ActiveOverAllocation(1.0, 1024, 4096), 6);
        Assert.Equal(0.45, VmSignals.ActiveOverAllocation(0.9, 2048, 4096), 6);
        Assert.Equal(1.0, VmSignals.ActiveOverAllocation(1.0, 5000, 4096), 6);   // over its allocation: capped
    }
}
