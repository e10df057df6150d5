// Errors injected into a running scenario: kernel pages are rebuilt bit-exact by parity while the
// scheduler keeps ballooning, a user-page error ends only the process using it, accounting holds.
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class ScenarioRecoveryTests
{
    [Fact]
    public void Errors_injected_into_a_running_scenario_are_recovered_or_contained_to_one_process()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows()) Assert.Skip("the fault engine runs on Linux and Windows");
        Scenario s = Scenario.Default with
        {
            Ticks = 120,
            Injections =
            [
                new InjectionSpec { Tick = 40, Vm = "active", Kind = "MultiBit", Target = "kernel" },
                new InjectionSpec { Tick = 60, Vm = "growing", Kind = "WholePage", Target = "kernel" },
                new InjectionSpec { Tick = 80, Vm = "idle", Kind = "SingleBit", Target = "user" },
            ],
        };
        using var runner = new ScenarioRunner(s);
        var events = new List<RunEvent>();
        runner.EventRaised += events.Add;
        runner.Boot();
        while (runner.Tick < s.Ticks) runner.Advance();

        List<RunEvent> recoveries = events.Where(e => e.Kind == RunEventKind.Recovery).ToList();
        Assert.Equal(3, events.Count(e => e.Kind == RunEventKind.Injection));
        Assert.Equal(["Recovered", "Recovered", "contained"], recoveries.Select(e => e.Detail!.Split(':')[0]));
        foreach (var v in runner.Scheduler.Vms)
        {
            var kernel = v.Os.Processes.Single(p => p.Name == "kernel");
            for (ulong page = 0; page < kernel.VirtualPages; page++)
            {
                ReadOnlySpan<ulong> words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(kernel.Page(page));
                Assert.True(words.IndexOfAnyExcept(0x6B65726E656C0000UL | page) < 0, $"{v.Vm.Name} kernel page {page}");
            }
        }
        var idle = runner.Scheduler.Vms.Single(v => v.Vm.Name == "idle").Os;
        Assert.True(idle.Processes.Single(p => p.Name == "idle").Killed);
        Assert.False(idle.Processes.Single(p => p.Name == "kernel").Killed);
        Assert.False(idle.Processes.Single(p => p.Name == "balloon").Killed);
        Assert.Empty(runner.CheckAccounting());
    }

    // Once a contained error ended the process, later injections into it have nothing to hit: they are in the
    // trace (Missed) but are not counted or drawn as injections (a summary read "injections 300, recoveries 1").
    [Fact]
    public void Injections_that_find_nothing_to_hit_are_traced_as_missed_and_not_counted()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows()) Assert.Skip("the fault engine runs on Linux and Windows");
        Scenario s = Scenario.Default with
        {
            Ticks = 30,
            Injections = [.. Enumerable.Range(0, 4).Select(_ => new InjectionSpec { Tick = 20, Vm = "idle", Kind = "MultiBit", Target = "user" })],
        };
        using var runner = new ScenarioRunner(s);
        var events = new List<RunEvent>();
        runner.EventRaised += events.Add;
        runner.Boot();
        while (runner.Tick < s.Ticks) runner.Advance();

        List<RunEvent> injections = events.Where(e => e.Kind == RunEventKind.Injection).ToList();
        Assert.Equal(4, injections.Count);
        Assert.Single(injections, e => e.Missed != true);
        Assert.All(injections.Where(e => e.Missed == true), e => Assert.Contains("no resident page to hit (process 'idle' was ended)", e.Detail));
        Assert.Single(events, e => e.Kind == RunEventKind.Recovery);
        Assert.Equal(2, events.Count(e => e.IsMarker));                // the one injection and its recovery
    }
}
