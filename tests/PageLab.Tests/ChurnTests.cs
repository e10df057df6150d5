// Churn, the frames a run takes from VMs per tick: the summary's figure is the balloons' inflations and
// the scheduler's host swaps after boot, counted from the run's own events, and the CSV carries it per tick.
using Xunit;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class ChurnTests
{
    [Fact]
    public void The_summarys_frames_moved_per_tick_is_what_balloons_and_host_swap_took_after_boot_over_the_ticks()
    {
        string example = Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "examples", "two-vms.json");
        if (!File.Exists(example)) Assert.Skip($"the repository's examples/ is not beside the tests ({example})");
        Scenario s = Scenario.Load(example) with
        {
            Ticks = 60, Policy = "esx", Reclamation = "balloon,swap",
        };
        using var runner = new ScenarioRunner(s);
        RunTimeline timeline = RunTimeline.Attach(runner);
        long taken = 0;
        runner.EventRaised += e =>
        {
            if (e.Tick > 0 && e.Kind is RunEventKind.Inflate or RunEventKind.HostSwap) taken += e.Frames ?? 0;
        };
        TickSnapshot last = runner.Run().Last();
        RunSummary summary = RunSummary.Of(timeline, last, runner.Arena, runner.CheckAccounting(), new RunTimings(0, 1, 0, 1));

        Assert.True(taken > 0, "the scheduler took no frames from a VM: the scenario moves nothing");
        Assert.Equal(taken / 60.0, summary.Host.FramesMovedPerTick, 9);
        Assert.Equal(taken, timeline.FramesMoved.Skip(1).Sum());
        Assert.Contains("\"framesMovedPerTick\":", summary.ToJson());
    }
}
