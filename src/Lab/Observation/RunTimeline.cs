// The timeline of a run as plain data: per VM, its snapshot at every recorded tick (every series and every
// figure of the per-VM record is read from it), host series per tick, and marker events (injections, recoveries).
using PageLab.Core.Condition;
using PageLab.Lab.Scenarios;

namespace PageLab.Lab.Observation;

/// <summary>One VM's series, one value per recorded tick (aligned with <see cref="RunTimeline.Ticks"/>): its
/// snapshots (<see cref="Samples"/>), and named series read from them (for any other figure of the per-VM
/// record: <see cref="RunTimeline.Series"/>).</summary>
public sealed class VmTimeline(string name, ulong pages)
{
    public string Name { get; } = name;
    public ulong Pages { get; } = pages;
    /// <summary>Its snapshot at each recorded tick: what every series and every <see cref="VmMeasure"/> is read from.</summary>
    public List<VmSnapshot> Samples { get; } = new();
    public IReadOnlyList<long> HeldFrames => Of(v => v.HeldFrames);
    public IReadOnlyList<ulong> AllocationPages => Of(v => v.AllocationPages);
    public IReadOnlyList<ulong> BalloonTargetPages => Of(v => v.BalloonTarget);
    public IReadOnlyList<ulong> BalloonActualPages => Of(v => v.BalloonActual);
    public IReadOnlyList<ulong> ActiveEstimatePages => Of(v => v.ActiveEstimatePages);
    /// <summary>The workload's true working set (what the estimate is after).</summary>
    public IReadOnlyList<ulong> WorkingSetPages => Of(v => v.WorkingSetPages);
    /// <summary>Guest page-outs (swap-outs) so far.</summary>
    public IReadOnlyList<ulong> GuestPageOuts => Of(v => v.SwapOuts);
    public IReadOnlyList<ulong> GuestPageIns => Of(v => v.SwapIns);
    public IReadOnlyList<ulong> DemandFaults => Of(v => v.DemandFaults);
    public IReadOnlyList<ulong> HostStalls => Of(v => v.HostStalls);
    public IReadOnlyList<MemoryLevel> Condition => Of(v => v.Condition);
    /// <summary>Its guest pages mapping a shared frame.</summary>
    public IReadOnlyList<long> SharedPages => Of(v => v.SharedPages);
    /// <summary>Copy-on-write breaks so far.</summary>
    public IReadOnlyList<ulong> CowBreaks => Of(v => v.CowBreaks);
    /// <summary>Its part of the frames sharing saves (left out of its balloon target).</summary>
    public IReadOnlyList<ulong> SharingCreditPages => Of(v => v.SharingCreditPages);
    /// <summary>Its pages the host swapped out so far (the scheduler's and the fault engine's).</summary>
    public IReadOnlyList<ulong> HostSwapOuts => Of(v => v.HostSwapOuts);
    /// <summary>Its application's totals at each tick (a sqlite workload), null where it has none.</summary>
    public IReadOnlyList<AppTotals?> App => Of(v => v.App);
    /// <summary>Its guest's page-cache pages (virtio-balloon's disk caches).</summary>
    public IReadOnlyList<ulong> PageCachePages => Of(v => v.PageCachePages);
    /// <summary>Page-cache pages its guest dropped, refaults (misses on dropped pages), dirty pages written back, so far.</summary>
    public IReadOnlyList<ulong> PageCacheDroppedPages => Of(v => v.PageCacheDroppedPages);
    public IReadOnlyList<ulong> PageCacheRefaults => Of(v => v.PageCacheRefaults);
    public IReadOnlyList<ulong> DirtyWritebacks => Of(v => v.DirtyWritebacks);

    // A series as a view over the samples: one copy of what was measured, however many series read it.
    private SampleSeries<T> Of<T>(Func<VmSnapshot, T> value) => new(Samples, value);

    private sealed class SampleSeries<T>(List<VmSnapshot> samples, Func<VmSnapshot, T> value) : IReadOnlyList<T>
    {
        public T this[int index] => value(samples[index]);
        public int Count => samples.Count;
        public IEnumerator<T> GetEnumerator() => samples.Select(value).GetEnumerator();
        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    /// <summary>Pages its balloon took over the run (inflate events).</summary>
    public long BalloonInflatedPages { get; internal set; }
    /// <summary>Pages the scheduler host-swapped out of it over the run (host_swap events).</summary>
    public long HostSwappedByScheduler { get; internal set; }
    /// <summary>Image reads that saw anything but the image's bytes, at the last tick.</summary>
    public long ImageWrongReads { get; internal set; }
    /// <summary>Frames mapped into this VM from other VMs' balloons.</summary>
    public long FramesIn { get; internal set; }
    /// <summary>Frames reclaimed from this VM's balloon and mapped into other VMs.</summary>
    public long FramesOut { get; internal set; }
}

/// <summary>What one VM did over a whole run (the end-of-run summary table).</summary>
public sealed record VmRunSummary(
    string Name, ulong MinAllocationPages, ulong MaxAllocationPages, ulong FinalAllocationPages, long FinalHeldFrames,
    ulong PeakActiveEstimatePages, long FramesIn, long FramesOut, ulong GuestPageOuts, ulong GuestPageIns,
    ulong DemandFaults, ulong HostStalls, int LowTicks, int CriticalTicks, int Markers);

public sealed class RunTimeline
{
    private readonly Dictionary<string, VmTimeline> _byName = new();
    private readonly List<RunEvent> _markers = new();

    /// <summary>An empty timeline for <paramref name="scenario"/>; fill it with <see cref="Add(TickSnapshot)"/>
    /// and <see cref="Add(RunEvent)"/>, or let <see cref="Attach"/> do it.</summary>
    public RunTimeline(Scenario scenario)
    {
        Scenario = scenario;
        foreach (VmSpec v in scenario.Vms)
        {
            var t = new VmTimeline(v.Name, v.Pages);
            Vms.Add(t);
            _byName[v.Name] = t;
        }
    }

    public Scenario Scenario { get; }
    public List<int> Ticks { get; } = new();
    public List<long> FreeFrames { get; } = new();
    /// <summary>Shared frames in the arena, per recorded tick.</summary>
    public List<long> SharedFrames { get; } = new();
    /// <summary>Guest pages (of all VMs) mapping them, per recorded tick.</summary>
    public List<long> SharingPages { get; } = new();
    /// <summary>Frames taken from VMs in each recorded tick (their balloons' and the scheduler's host swap):
    /// memory moved away from one VM so another could have it. Tick 0 holds the boot's.</summary>
    public List<long> FramesMoved { get; } = new();
    private long _framesMovedInTick;

    /// <summary>Churn: frames taken from VMs per tick over the ticks after boot (0 when none ran).</summary>
    public double FramesMovedPerTick
    {
        get
        {
            int ticks = Ticks.Count(t => t > 0);
            return ticks == 0 ? 0 : (double)Ticks.Zip(FramesMoved).Where(x => x.First > 0).Sum(x => x.Second) / ticks;
        }
    }
    public List<VmTimeline> Vms { get; } = new();
    /// <summary>Events shown as markers (<see cref="RunEvent.IsMarker"/>), in the order they happened.</summary>
    public IReadOnlyList<RunEvent> Markers => _markers;

    /// <summary>A timeline that records every tick and event <paramref name="runner"/> reports from now on.</summary>
    public static RunTimeline Attach(ScenarioRunner runner)
    {
        var t = new RunTimeline(runner.Scenario);
        runner.Ticked += t.Add;
        runner.EventRaised += t.Add;
        return t;
    }

    public void Add(TickSnapshot s)
    {
        if (Ticks.Count > 0 && s.Tick <= Ticks[^1])
            throw new ArgumentException($"tick {s.Tick} is not after the last recorded tick {Ticks[^1]}", nameof(s));
        Ticks.Add(s.Tick);
        FreeFrames.Add(s.FreeFrames);
        SharedFrames.Add(s.Sharing.SharedFrames);
        SharingPages.Add(s.Sharing.SharingPages);
        FramesMoved.Add(_framesMovedInTick);
        _framesMovedInTick = 0;
        foreach (VmSnapshot v in s.Vms)
        {
            VmTimeline t = Vm(v.Name);
            t.Samples.Add(v);
            t.ImageWrongReads = v.ImageWrongReads;
        }
    }

    public void Add(RunEvent e)
    {
        if (e.IsMarker) _markers.Add(e);
        if (e.Kind == RunEventKind.Inflate && e.Vm is not null && e.Frames is long inflated)
        {
            Vm(e.Vm).BalloonInflatedPages += inflated;
            _framesMovedInTick += inflated;
        }
        if (e.Kind == RunEventKind.HostSwap && e.Vm is not null && e.Frames is long swapped)
        {
            Vm(e.Vm).HostSwappedByScheduler += swapped;
            _framesMovedInTick += swapped;
        }
        if (e.Kind == RunEventKind.Transfer && e.Frames is long n)
        {
            if (e.From is not null) Vm(e.From).FramesOut += n;
            if (e.To is not null) Vm(e.To).FramesIn += n;
        }
    }

    public VmTimeline Vm(string name) =>
        _byName.TryGetValue(name, out VmTimeline? t) ? t : throw new ArgumentException($"no VM named '{name}' (VMs: {string.Join(", ", _byName.Keys)})", nameof(name));

    /// <summary>Per VM: allocation range, frames moved, paging and faults at the end, time in each condition.</summary>
    public List<VmRunSummary> Summarize() => Vms.Select(v => new VmRunSummary(
        v.Name,
        v.AllocationPages.DefaultIfEmpty().Min(), v.AllocationPages.DefaultIfEmpty().Max(), v.AllocationPages.LastOrDefault(),
        v.HeldFrames.LastOrDefault(), v.ActiveEstimatePages.DefaultIfEmpty().Max(), v.FramesIn, v.FramesOut,
        v.GuestPageOuts.LastOrDefault(), v.GuestPageIns.LastOrDefault(), v.DemandFaults.LastOrDefault(), v.HostStalls.LastOrDefault(),
        v.Condition.Count(c => c == MemoryLevel.Low), v.Condition.Count(c => c == MemoryLevel.Critical),
        _markers.Count(m => m.Vm == v.Name))).ToList();

    /// <summary>The host's values at recorded tick number <paramref name="i"/> (an index into <see cref="Ticks"/>).</summary>
    public TickHost HostAt(int i) => new(FreeFrames[i], SharedFrames[i], FramesMoved[i]);

    /// <summary>A measure's values for one VM, one per recorded tick (null where the VM has none).</summary>
    public double?[] Series(VmTimeline vm, VmMeasure measure) =>
        Enumerable.Range(0, Ticks.Count).Select(i => measure.At(vm.Samples[i], HostAt(i))).ToArray();

    /// <summary>The columns of <see cref="WriteCsv"/>, in order: tick, vm, then every CSV measure of
    /// <see cref="VmMeasures"/> (docs/run-summary.md describes them).</summary>
    public static readonly string[] CsvColumns = ["tick", "vm", .. VmMeasures.Csv.Select(m => m.Name)];

    /// <summary>Writes the timeline as CSV: a header line of <see cref="CsvColumns"/>, then one row per recorded
    /// tick per VM (ticks in order, VMs in the scenario's order); counts are totals so far, and a figure the VM
    /// does not have (an application's, for a VM without one) is empty.</summary>
    public void WriteCsv(TextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(string.Join(',', CsvColumns));
        writer.Write('\n');
        VmMeasure[] measures = VmMeasures.Csv.ToArray();
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        for (int i = 0; i < Ticks.Count; i++)
        {
            TickHost host = HostAt(i);
            foreach (VmTimeline v in Vms)
            {
                writer.Write(Ticks[i].ToString(inv));
                writer.Write(',');
                writer.Write(CsvField(v.Name));
                foreach (VmMeasure m in measures)
                {
                    writer.Write(',');
                    writer.Write(CsvField(m.Format(m.At(v.Samples[i], host))));
                }
                writer.Write('\n');
            }
        }
    }

    // A CSV field, quoted (RFC 4180) when it holds a comma, a quote or a line break.
    public static string CsvField(string value) =>
        value.IndexOfAny([',', '"', '\n', '\r']) < 0 ? value : $"\"{value.Replace("\"", "\"\"")}\"";
}
