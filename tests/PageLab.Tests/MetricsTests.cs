// The "PageLab" meter as a listener (dotnet-counters, OpenTelemetry) sees it: every documented instrument
// publishes during a run, per VM where it should, and the transfer counter agrees with the scheduler.
using System.Diagnostics.Metrics;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class MetricsTests
{
    /// <summary>The instruments the README documents, with their units.</summary>
    public static readonly string[] Documented =
    [
        "pagelab.host.frames.free", "pagelab.host.frames.used", "pagelab.host.frames.retired",
        "pagelab.vm.frames.held", "pagelab.vm.allocation", "pagelab.vm.balloon.target", "pagelab.vm.balloon.actual",
        "pagelab.vm.working_set.estimate", "pagelab.vm.condition", "pagelab.vm.page_outs", "pagelab.vm.page_ins", "pagelab.vm.faults",
        "pagelab.vm.page_cache.pages", "pagelab.vm.page_cache.dropped", "pagelab.vm.page_cache.refaults", "pagelab.vm.page_cache.writebacks",
        "pagelab.scheduler.transfers", "pagelab.balloon.refused", "pagelab.injections", "pagelab.recoveries",
        "pagelab.tick.duration", "pagelab.scheduler.step.duration", "pagelab.scheduler.sample_period.duration",
        "pagelab.scheduler.host_swapped", "pagelab.sharing.frames", "pagelab.sharing.pages", "pagelab.sharing.cow_breaks",
        "pagelab.app.transactions", "pagelab.app.heap.in_guest", "pagelab.app.heap.outside_guest", "pagelab.app.cache.hits",
        "pagelab.app.cache.misses", "pagelab.app.wrong_results",
    ];

    [Fact]
    public void In_a_run_that_shares_the_sharing_instruments_agree_with_the_engine()
    {
        string example = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "examples", "same-image.json"));
        if (!File.Exists(example)) Assert.Skip($"the repository's examples/ is not beside the tests ({example})");
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows()) Assert.Skip("the fault engine runs on Linux and Windows");
        var measured = new List<(string Name, double Value, object? Run, object? Scenario)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == PageLabMetrics.MeterName && instrument.Name.StartsWith("pagelab.sharing.", StringComparison.Ordinal))
                l.EnableMeasurementEvents(instrument);
        };
        void Add(Instrument i, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            object? run = null, scenario = null;
            foreach (KeyValuePair<string, object?> kv in tags)
            {
                if (kv.Key == PageLabMetrics.RunTag) run = kv.Value;
                if (kv.Key == PageLabMetrics.ScenarioTag) scenario = kv.Value;
            }
            lock (measured) measured.Add((i.Name, value, run, scenario));
        }
        listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Add(i, v, tags));
        listener.Start();

        Scenario s = Scenario.Load(example) with { Ticks = 30, Name = "metrics-sharing" };
        using var runner = new ScenarioRunner(s);
        TickSnapshot last = null!;
        foreach (TickSnapshot t in runner.Run()) last = t;
        listener.RecordObservableInstruments(); // gauges are measured only here, for this listener
        // Other tests' runs may count on the same meter meanwhile: only this run's measurements count.
        int run = (int)measured.First(m => m.Name == "pagelab.sharing.frames" && m.Scenario as string == "metrics-sharing").Run!;
        double cow = measured.Where(m => m.Name == "pagelab.sharing.cow_breaks" && m.Run is int r && r == run).Sum(m => m.Value);
        double Gauge(string name) => measured.Single(m => m.Name == name && m.Run is int r && r == run).Value;

        Assert.Equal(last.Sharing.SharedFrames, Gauge("pagelab.sharing.frames"));
        Assert.Equal(last.Sharing.SharingPages, Gauge("pagelab.sharing.pages"));
        Assert.True(last.Sharing.FramesSaved > 0);
        // Counted per tick from the engine's per-VM counters (the runner's share events): the run's total.
        Assert.Equal(runner.Scheduler.Vms.Aggregate(0UL, (n, v) => n + v.Vm.Counters.CowBreaks), cow);
    }

    [Fact]
    public void A_listener_on_the_PageLab_meter_sees_every_documented_instrument_and_the_run_s_values()
    {
        var published = new HashSet<string>();
        var measured = new List<(string Name, double Value, Dictionary<string, object?> Tags)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name != PageLabMetrics.MeterName) return;
            lock (published) published.Add(instrument.Name);
            l.EnableMeasurementEvents(instrument);
        };
        void Add(Instrument i, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            var t = new Dictionary<string, object?>();
            foreach (KeyValuePair<string, object?> kv in tags) t[kv.Key] = kv.Value;
            lock (measured) measured.Add((i.Name, value, t));
        }
        listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Add(i, v, tags));
        listener.SetMeasurementEventCallback<double>((i, v, tags, _) => Add(i, v, tags));
        listener.Start();

        long moved;
        int run;
        using (var runner = new ScenarioRunner(RunOutputTests.Short() with { Name = "metrics" }))
        {
            foreach (TickSnapshot _ in runner.Run()) { }
            listener.RecordObservableInstruments();
            moved = runner.Scheduler.TransferredFrames;
            run = (int)measured.First(m => m.Tags.GetValueOrDefault(PageLabMetrics.ScenarioTag) as string == "metrics").Tags[PageLabMetrics.RunTag]!;
        }
        var mine = measured.Where(m => m.Tags.GetValueOrDefault(PageLabMetrics.RunTag) is int r && r == run).ToList();

        Assert.Empty(Documented.Except(published));
        Assert.Empty(published.Except(Documented));
        foreach (string vm in new[] { "idle", "active" })
        {
            Assert.True(Value("pagelab.vm.frames.held", vm) > 0, $"{vm} holds no frames");
            Assert.True(Value("pagelab.vm.allocation", vm) > 0, $"{vm} has no allocation");
            Assert.Contains(mine, m => m.Name == "pagelab.vm.faults" && (string?)m.Tags[PageLabMetrics.VmTag] == vm && (string?)m.Tags[PageLabMetrics.KindTag] == "demand" && m.Value > 0);
        }
        Assert.Equal(moved, mine.Where(m => m.Name == "pagelab.scheduler.transfers").Sum(m => m.Value));
        Assert.Contains(mine, m => m.Name == "pagelab.scheduler.step.duration");
        Assert.True(mine.Single(m => m.Name == "pagelab.host.frames.free").Value > 0);

        double Value(string name, string vm) => mine.Single(m => m.Name == name && (string?)m.Tags[PageLabMetrics.VmTag] == vm).Value;
    }
}
