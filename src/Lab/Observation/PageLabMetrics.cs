// System.Diagnostics.Metrics instruments under the meter "PageLab", so dotnet-counters or OpenTelemetry
// can watch a running scenario. Gauges read the snapshot each runner publishes per tick, never live state.
using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace PageLab.Lab.Observation;

/// <summary>One VM's values as last published by its runner: <paramref name="Values"/> holds those of
/// <see cref="VmMeasures.Metered"/>, in its order (null where the VM has none).</summary>
internal sealed record VmMetrics(string Name, double?[] Values, IReadOnlyList<(string Kind, ulong Count)> Faults);

/// <summary>Everything a runner publishes at the end of a tick.</summary>
internal sealed record RunMetrics(long FreeFrames, long UsedFrames, long RetiredFrames, IReadOnlyList<VmMetrics> Vms,
    long SharedFrames = 0, long SharingPages = 0);

public static class PageLabMetrics
{
    /// <summary>The meter's name: <c>dotnet-counters monitor -n pagelab --counters PageLab</c>.</summary>
    public const string MeterName = "PageLab";

    /// <summary>Tag keys: the scenario's name, the run's number in this process, the VM, a fault or event kind.</summary>
    public const string ScenarioTag = "scenario", RunTag = "run", VmTag = "vm", KindTag = "kind", FromTag = "from", ToTag = "to";

    private static readonly Meter Meter = new(MeterName, "1.0");
    private static readonly Lock Gate = new();
    private static readonly List<Source> Live = new();
    private static int _runs;

    internal static readonly Counter<long> Transfers = Meter.CreateCounter<long>("pagelab.scheduler.transfers", "{frame}",
        "Frames reclaimed from one VM's balloon and mapped into another VM");
    internal static readonly Counter<long> Refused = Meter.CreateCounter<long>("pagelab.balloon.refused", "{page}",
        "Balloon reports the host refused (page not the balloon's, value not written, ...)");
    internal static readonly Counter<long> HostSwapped = Meter.CreateCounter<long>("pagelab.scheduler.host_swapped", "{page}",
        "Pages the scheduler host-swapped out of a VM still over its ceiling after sharing and ballooning");
    internal static readonly Counter<long> CowBreaks = Meter.CreateCounter<long>("pagelab.sharing.cow_breaks", "{fault}",
        "Writes to shared pages (copy-on-write faults), per VM");
    internal static readonly Counter<long> Injections = Meter.CreateCounter<long>("pagelab.injections", "{error}",
        "Errors injected into guest memory (reported to the runner with kind injection)");
    internal static readonly Counter<long> Recoveries = Meter.CreateCounter<long>("pagelab.recoveries", "{recovery}",
        "Recoveries from memory errors (reported to the runner with kind recovery)");
    internal static readonly Histogram<double> TickDuration = Meter.CreateHistogram<double>("pagelab.tick.duration", "ms",
        "Wall time of one tick: workloads, sampling, one balloon step, condition");
    internal static readonly Histogram<double> StepDuration = Meter.CreateHistogram<double>("pagelab.scheduler.step.duration", "ms",
        "Wall time of one scheduler step (every balloon one bounded step towards its target)");
    internal static readonly Histogram<double> SamplePeriodDuration = Meter.CreateHistogram<double>("pagelab.scheduler.sample_period.duration", "ms",
        "Wall time of the end of a sampling period (working-set estimates and new allocations)");

    private static readonly List<Instrument> Observables = new();

    static PageLabMetrics()
    {
        Observables.Add(Meter.CreateObservableGauge("pagelab.host.frames.free", () => Host(m => m.FreeFrames), "{frame}", "Free arena frames (holes: no memory)"));
        Observables.Add(Meter.CreateObservableGauge("pagelab.host.frames.used", () => Host(m => m.UsedFrames), "{frame}", "Arena frames held by the host, guests or parity"));
        Observables.Add(Meter.CreateObservableGauge("pagelab.host.frames.retired", () => Host(m => m.RetiredFrames), "{frame}", "Arena frames taken out of service"));
        Observables.Add(Meter.CreateObservableGauge("pagelab.sharing.frames", () => Host(m => m.SharedFrames), "{frame}", "Shared frames (content-based page sharing)"));
        Observables.Add(Meter.CreateObservableGauge("pagelab.sharing.pages", () => Host(m => m.SharingPages), "{page}", "Guest pages mapping a shared frame (less the shared frames: frames saved)"));
        // One instrument per metered figure of the per-VM record: a counter for a total, a gauge for a level.
        for (int i = 0; i < VmMeasures.Metered.Count; i++)
        {
            VmMeasure m = VmMeasures.Metered[i];
            int at = i;
            Observables.Add((m.Kind, m.Integral) switch
            {
                (MeasureKind.Total, true) => Meter.CreateObservableCounter(m.Meter!, () => PerVm(at, d => (long)d), m.Unit, m.Description),
                (MeasureKind.Total, false) => Meter.CreateObservableCounter(m.Meter!, () => PerVm(at, d => d), m.Unit, m.Description),
                (MeasureKind.Level, true) => Meter.CreateObservableGauge(m.Meter!, () => PerVm(at, d => (long)d), m.Unit, m.Description),
                _ => (Instrument)Meter.CreateObservableGauge(m.Meter!, () => PerVm(at, d => d), m.Unit, m.Description),
            });
        }
        Observables.Add(Meter.CreateObservableCounter("pagelab.vm.faults", Faults, "{fault}",
            "Faults by kind: demand, sample_touch, pool_empty, map_failure (fault engine), guest_major, guest_minor (guest OS), host_stall"));
    }

    /// <summary>True while a listener (dotnet-counters, OpenTelemetry, a MeterListener) observes a gauge, so
    /// runners build snapshots only when someone reads them.</summary>
    internal static bool Observed => Observables.Any(i => i.Enabled);

    /// <summary>A runner's place in the live set: it publishes per tick and leaves when disposed.</summary>
    internal sealed class Source : IDisposable
    {
        internal Source(string scenario, int run)
        {
            Tags = [new(ScenarioTag, scenario), new(RunTag, run)];
        }

        internal KeyValuePair<string, object?>[] Tags { get; }
        internal RunMetrics? Latest { get; set; }

        public void Dispose()
        {
            lock (Gate) Live.Remove(this);
        }
    }

    internal static Source Register(string scenario)
    {
        var s = new Source(scenario, Interlocked.Increment(ref _runs));
        lock (Gate) Live.Add(s);
        return s;
    }

    internal static void Publish(Source source, RunMetrics metrics)
    {
        lock (Gate) source.Latest = metrics;
    }

    internal static TagList With(Source s, string key, object? value)
    {
        var tags = new TagList(s.Tags) { { key, value } };
        return tags;
    }

    private static List<(Source S, RunMetrics M)> Snapshot()
    {
        lock (Gate) return Live.Where(s => s.Latest is not null).Select(s => (s, s.Latest!)).ToList();
    }

    private static IEnumerable<Measurement<long>> Host(Func<RunMetrics, long> value) =>
        Snapshot().Select(x => new Measurement<long>(value(x.M), x.S.Tags));

    // A metered figure of every VM that has it, tagged with the VM.
    private static IEnumerable<Measurement<T>> PerVm<T>(int measure, Func<double, T> value) where T : struct =>
        Snapshot().SelectMany(x => x.M.Vms.Where(v => v.Values[measure] is not null)
            .Select(v => new Measurement<T>(value(v.Values[measure]!.Value), With(x.S, VmTag, v.Name))));

    private static IEnumerable<Measurement<long>> Faults() =>
        Snapshot().SelectMany(x => x.M.Vms.SelectMany(v => v.Faults.Select(f =>
        {
            TagList tags = With(x.S, VmTag, v.Name);
            tags.Add(KindTag, f.Kind);
            return new Measurement<long>((long)f.Count, tags);
        })));
}
