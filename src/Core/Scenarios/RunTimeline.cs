// The timeline of a run as plain data: per VM and tick, host frames held, balloon target and actual,
// working-set estimate, guest page-outs and condition level, plus marker events (injections, recoveries).
using PageLab.Core.Condition;

namespace PageLab.Core.Scenarios;

/// <summary>One VM's series, one value per recorded tick (aligned with <see cref="RunTimeline.Ticks"/>).</summary>
public sealed class VmTimeline(string name, ulong pages)
{
    public string Name { get; } = name;
    public ulong Pages { get; } = pages;
    public List<long> HeldFrames { get; } = new();
    public List<ulong> AllocationPages { get; } = new();
    public List<ulong> BalloonTargetPages { get; } = new();
    public List<ulong> BalloonActualPages { get; } = new();
    public List<ulong> ActiveEstimatePages { get; } = new();
    /// <summary>The workload's true working set (what the estimate is after).</summary>
    public List<ulong> WorkingSetPages { get; } = new();
    /// <summary>Guest page-outs (swap-outs) so far.</summary>
    public List<ulong> GuestPageOuts { get; } = new();
    public List<ulong> GuestPageIns { get; } = new();
    public List<ulong> DemandFaults { get; } = new();
    public List<ulong> HostStalls { get; } = new();
    public List<MemoryLevel> Condition { get; } = new();
    /// <summary>Its guest pages mapping a shared frame.</summary>
    public List<long> SharedPages { get; } = new();
    /// <summary>Copy-on-write breaks so far.</summary>
    public List<ulong> CowBreaks { get; } = new();
    /// <summary>Its part of the frames sharing saves (left out of its balloon target).</summary>
    public List<ulong> SharingCreditPages { get; } = new();
    /// <summary>Its pages the host swapped out so far (the scheduler's and the fault engine's).</summary>
    public List<ulong> HostSwapOuts { get; } = new();
    /// <summary>Its application's totals at each tick (a sqlite workload), null where it has none.</summary>
    public List<AppTotals?> App { get; } = new();
    /// <summary>Its guest's page-cache pages (virtio-balloon's disk caches).</summary>
    public List<ulong> PageCachePages { get; } = new();
    /// <summary>Page-cache pages its guest dropped, refaults (misses on dropped pages), dirty pages written back, so far.</summary>
    public List<ulong> PageCacheDroppedPages { get; } = new();
    public List<ulong> PageCacheRefaults { get; } = new();
    public List<ulong> DirtyWritebacks { get; } = new();
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
            t.HeldFrames.Add(v.HeldFrames);
            t.AllocationPages.Add(v.AllocationPages);
            t.BalloonTargetPages.Add(v.BalloonTarget);
            t.BalloonActualPages.Add(v.BalloonActual);
            t.ActiveEstimatePages.Add(v.ActiveEstimatePages);
            t.WorkingSetPages.Add(v.WorkingSetPages);
            t.GuestPageOuts.Add(v.SwapOuts);
            t.GuestPageIns.Add(v.SwapIns);
            t.DemandFaults.Add(v.DemandFaults);
            t.HostStalls.Add(v.HostStalls);
            t.Condition.Add(v.Condition);
            t.SharedPages.Add(v.SharedPages);
            t.CowBreaks.Add(v.CowBreaks);
            t.SharingCreditPages.Add(v.SharingCreditPages);
            t.HostSwapOuts.Add(v.HostSwapOuts);
            t.App.Add(v.App);
            t.PageCachePages.Add(v.PageCachePages);
            t.PageCacheDroppedPages.Add(v.PageCacheDroppedPages);
            t.PageCacheRefaults.Add(v.PageCacheRefaults);
            t.DirtyWritebacks.Add(v.DirtyWritebacks);
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

    /// <summary>The columns of <see cref="WriteCsv"/>, in order (docs/run-summary.md describes them).</summary>
    public static readonly string[] CsvColumns =
    [
        "tick", "vm", "heldFrames", "allocationPages", "balloonTargetPages", "balloonActualPages", "activeEstimatePages",
        "workingSetPages", "guestPageOuts", "guestPageIns", "demandFaults", "hostStalls", "condition", "freeArenaFrames",
        "sharedPages", "cowBreaks", "sharingCreditPages", "hostSwapOuts", "sharedFrames", "framesMoved",
        "appTransactions", "appHeapBytesInGuest", "appCacheMisses", "appShrinkEvents", "appWrongResults",
        "pageCachePages", "pageCacheDroppedPages", "pageCacheRefaults", "dirtyWritebacks",
    ];

    /// <summary>Writes the timeline as CSV: a header line of <see cref="CsvColumns"/>, then one row per recorded
    /// tick per VM (ticks in order, VMs in the scenario's order); counts are totals so far.</summary>
    public void WriteCsv(TextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        writer.Write(string.Join(',', CsvColumns));
        writer.Write('\n');
        var inv = System.Globalization.CultureInfo.InvariantCulture;
        for (int i = 0; i < Ticks.Count; i++)
            foreach (VmTimeline v in Vms)
            {
                writer.Write(string.Join(',',
                    Ticks[i].ToString(inv), CsvField(v.Name), v.HeldFrames[i].ToString(inv), v.AllocationPages[i].ToString(inv),
                    v.BalloonTargetPages[i].ToString(inv), v.BalloonActualPages[i].ToString(inv), v.ActiveEstimatePages[i].ToString(inv),
                    v.WorkingSetPages[i].ToString(inv), v.GuestPageOuts[i].ToString(inv), v.GuestPageIns[i].ToString(inv),
                    v.DemandFaults[i].ToString(inv), v.HostStalls[i].ToString(inv), v.Condition[i].ToString().ToLowerInvariant(),
                    FreeFrames[i].ToString(inv), v.SharedPages[i].ToString(inv), v.CowBreaks[i].ToString(inv),
                    v.SharingCreditPages[i].ToString(inv), v.HostSwapOuts[i].ToString(inv), SharedFrames[i].ToString(inv),
                    FramesMoved[i].ToString(inv),
                    v.App[i]?.Transactions.ToString(inv) ?? "", v.App[i]?.HeapBytesInGuest.ToString(inv) ?? "",
                    v.App[i]?.CacheMisses.ToString(inv) ?? "", v.App[i]?.ShrinkEvents.ToString(inv) ?? "",
                    v.App[i]?.WrongResults.ToString(inv) ?? "",
                    v.PageCachePages[i].ToString(inv), v.PageCacheDroppedPages[i].ToString(inv), v.PageCacheRefaults[i].ToString(inv),
                    v.DirtyWritebacks[i].ToString(inv)));
                writer.Write('\n');
            }
    }

    // A CSV field, quoted (RFC 4180) when it holds a comma, a quote or a line break.
    public static string CsvField(string value) =>
        value.IndexOfAny([',', '"', '\n', '\r']) < 0 ? value : $"\"{value.Replace("\"", "\"\"")}\"";
}
