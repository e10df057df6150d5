// Free page reporting on real memory: a guest's freed pages go back to the host without a balloon, and
// compared with ballooning on the same scenario (memory returned, how fast, guest paging).
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using Xunit;
using PageLab.Lab.Scenarios;
using PageLab.Lab.Observation;

namespace PageLab.Tests;

public class FreePageReportingTests(ITestOutputHelper output)
{
    private static Scenario Example(bool reporting, string policy) => new()
    {
        Name = "fpr", HostPages = 6144, Ticks = 160, SamplePeriodTicks = 10, Policy = policy,
        Vms =
        [
            new VmSpec
            {
                Name = "burst", Pages = 4096,
                FreePageReporting = reporting ? new FreePageReportingSpec { DelayTicks = 2, FractionPerPass = 1.0 / 16 } : null,
                Workload = new WorkloadSpec { Kind = "burst", Pages = 3200, EndPages = 300, FreeAtTick = 60, TouchesPerTick = 400 },
            },
            new VmSpec { Name = "steady", Pages = 4096, Workload = new WorkloadSpec { Kind = "growing", Pages = 1500, EndPages = 3600, TouchesPerTick = 400 } },
        ],
    };

    private sealed record Outcome(long HeldAtFree, long HeldEnd, int TicksTo90, ulong GuestPaging, long BalloonFrames, ulong BurstPaging);

    private static Outcome Run(Scenario s)
    {
        using var runner = new ScenarioRunner(s);
        runner.Boot();
        long atFree = 0, balloon = 0;
        var held = new List<long>();
        TickSnapshot t = null!;
        while (runner.Tick < s.Ticks)
        {
            t = runner.Advance();
            if (t.Tick == 59) atFree = t.Vms[0].HeldFrames;
            if (t.Tick >= 60) held.Add(t.Vms[0].HeldFrames);
            balloon = Math.Max(balloon, (long)t.Vms[0].BalloonActual);
        }
        Assert.Empty(runner.CheckAccounting());
        long end = held[^1];
        long goal = atFree - (long)(0.9 * (atFree - end));
        int ticks = held.FindIndex(h => h <= goal);
        ulong paging = t.Vms.Aggregate(0UL, (sum, v) => sum + v.SwapIns + v.SwapOuts);
        return new Outcome(atFree, end, ticks, paging, balloon, t.Vms[0].SwapIns + t.Vms[0].SwapOuts);
    }

    [Fact]
    public void Freed_guest_pages_go_back_to_the_host_without_a_balloon_and_sooner_than_by_ballooning()
    {
        Outcome ballooned = Run(Example(reporting: false, policy: "pagelab"));
        Outcome reported = Run(Example(reporting: true, policy: "pagelab"));
        Outcome staticReported = Run(Example(reporting: true, policy: "static"));
        output.WriteLine("| mechanism | held when freed | held at end | returned | ticks to return 90% | largest balloon | guest paging (burst / all) |");
        foreach ((string name, Outcome o) in new[] { ("balloon only (pagelab)", ballooned), ("free page reporting (pagelab)", reported), ("free page reporting (static partition)", staticReported) })
            output.WriteLine($"| {name} | {o.HeldAtFree} | {o.HeldEnd} | {o.HeldAtFree - o.HeldEnd} | {o.TicksTo90} | {o.BalloonFrames} | {o.BurstPaging} / {o.GuestPaging} |");

        // With reporting, the freed memory came back with no balloon page at all, most of it, and sooner.
        Assert.Equal(0, reported.BalloonFrames);
        Assert.True(reported.HeldAtFree - reported.HeldEnd > 2400, $"reporting returned {reported.HeldAtFree - reported.HeldEnd} frames");
        Assert.True(reported.HeldAtFree - reported.HeldEnd > 2 * (ballooned.HeldAtFree - ballooned.HeldEnd),
            $"reporting returned {reported.HeldAtFree - reported.HeldEnd}, the balloon {ballooned.HeldAtFree - ballooned.HeldEnd}");
        Assert.True(reported.TicksTo90 >= 0 && reported.TicksTo90 < ballooned.TicksTo90,
            $"reporting took {reported.TicksTo90} ticks, the balloon {ballooned.TicksTo90}");
        Assert.Equal(0UL, reported.BurstPaging);
        // Without a scheduler the same reports still return the memory (the balloon there is the boot's).
        Assert.True(staticReported.HeldAtFree - staticReported.HeldEnd > 2000, $"static: returned {staticReported.HeldAtFree - staticReported.HeldEnd}");
    }

    [Fact]
    public void A_reported_page_the_guest_uses_again_is_a_fresh_zero_page_and_a_page_in_use_is_never_taken()
    {
        using var t = new TestArena(1024);
        GuestVm vm = t.Vm("fpr", 512, pool: 512);
        vm.RefillPool();
        using var os = new GuestOperatingSystem(vm);
        var fpr = new Core.Balloon.FreePageReporting(os, new FreePageReportingOptions { DelayTicks = 1, FractionPerPass = 1 });
        GuestProcess p = os.Spawn("app", 300);
        for (ulong v = 0; v < 300; v++) p.Page(v).Fill(0xAB);
        for (ulong v = 100; v < 300; v++) p.Release(v);                      // freed at tick 0, with 0xAB still in them
        long heldBefore = vm.HeldFrames;

        Assert.Equal(0, fpr.Pass(0));                                        // not free long enough yet
        int taken = fpr.Pass(1);

        Assert.True(taken >= 200, $"took {taken}");
        Assert.Equal(heldBefore - taken, vm.HeldFrames);
        for (ulong v = 0; v < 100; v++) Assert.True(p.Page(v).IndexOfAnyExcept((byte)0xAB) < 0, $"page {v} of the process changed");
        for (ulong v = 100; v < 300; v++) Assert.True(p.Page(v).IndexOfAnyExcept((byte)0) < 0, $"page {v} came back with old bytes");
        Assert.Empty(Core.Host.FrameAccounting.Check(t.Arena, [vm]));
    }

    [Fact]
    public void A_scenario_file_may_turn_reporting_off_with_null_but_not_give_it_a_bad_fraction()
    {
        using var dir = new TempDir();
        string file = Path.Combine(dir.Path, "s.json");
        File.WriteAllText(file, """{ "hostPages": 1024, "vms": [ { "name": "a", "pages": 1024, "freePageReporting": null, "workload": { "pages": 100 } } ] }""");
        Assert.Null(Scenario.Load(file).Vms[0].FreePageReporting);
        File.WriteAllText(file, """{ "hostPages": 1024, "vms": [ { "name": "a", "pages": 1024, "freePageReporting": { "fractionPerPass": 2 }, "workload": { "pages": 100 } } ] }""");
        var e = Assert.Throws<ScenarioException>(() => Scenario.Load(file));
        Assert.Contains("vms[0].freePageReporting.fractionPerPass: must be in (0, 1], got 2", e.Message);
    }
}
