// What a run measures per VM, declared once: each figure's name, unit and meaning, how it is read from a tick's
// VmSnapshot, and where it goes (CSV column, live-table column, meter instrument, trace, plot, summary and sweep).
using System.Globalization;
using PageLab.Core.Condition;
using PageLab.Lab.Scenarios;

namespace PageLab.Lab.Observation;

/// <summary>Host values of one tick that a VM's per-tick row carries (the CSV repeats them on every VM's row).</summary>
public readonly record struct TickHost(long FreeArenaFrames, long SharedFrames, long FramesMoved);

/// <summary>A total so far (a meter counter; a plot draws its change per tick) or a level now (a meter gauge).</summary>
public enum MeasureKind { Total, Level }

/// <summary>Which VMs a live-table column is for: every run's, a run that shares pages, a run with an application,
/// a run whose guests cache file pages.</summary>
public enum MeasureGroup { Vm, Sharing, App, PageCache }

/// <summary>How a figure with no typed key of its own in the run summary is made from its per-tick values.</summary>
public enum RunFigure { None, End, Max }

/// <summary>One per-VM figure. <see cref="Name"/> is its CSV column and sweep figure (vm_&lt;vm&gt;_&lt;name&gt; per VM,
/// the sum over VMs as &lt;name&gt;); each other property says whether and how it appears in one output.</summary>
public sealed record VmMeasure(string Name, string Unit, string Description)
{
    /// <summary>Its value at a tick (null: none for this VM, e.g. an application figure of a VM without one).
    /// Null for a figure of the whole run only (read with <see cref="FromSummary"/>).</summary>
    public Func<VmSnapshot, TickHost, double?>? Value { get; init; }
    public MeasureKind Kind { get; init; } = MeasureKind.Total;
    public MeasureGroup Group { get; init; } = MeasureGroup.Vm;
    /// <summary>Whole numbers (a long Parquet column and meter instrument); false: doubles.</summary>
    public bool Integral { get; init; } = true;
    /// <summary>A column of the per-tick CSV (`run --csv`), in the order of <see cref="VmMeasures.All"/>.</summary>
    public bool Csv { get; init; }
    /// <summary>Its header in the live table, null: not shown there; <see cref="Importance"/> as FittedTable's (0: never dropped).</summary>
    public string? Header { get; init; }
    public int Importance { get; init; }
    /// <summary>The live table's cell when it is not the value's text (e.g. target/actual in one cell).</summary>
    public Func<VmSnapshot, string>? Cell { get; init; }
    /// <summary>The value as text when it is not the number (the condition's level name).</summary>
    public Func<double, string>? Text { get; init; }
    /// <summary>Its meter instrument under "PageLab" (tagged with the VM), null: none. A counter for a total, a gauge for a level.</summary>
    public string? Meter { get; init; }
    /// <summary>In the trace's per-tick <c>sample</c> event. Only figures the seed decides: a trace is byte-identical
    /// for one seed, so nothing measured by a clock (latency, rates) and nothing that depends on thread timing.</summary>
    public bool Trace { get; init; }
    /// <summary>Drawn on the VM's application panel of the timeline plot (a total as its change per tick).</summary>
    public bool Plot { get; init; }
    /// <summary>Where the run summary already has this figure as a typed key (the JSON's own names, kept as they
    /// are); the sweep reads it from there.</summary>
    public Func<VmTotals, double?>? FromSummary { get; init; }
    /// <summary>For a figure with no typed key: written to the VM's object in the summary under <see cref="Name"/>
    /// (its last or highest per-tick value), and read back from there by the sweep.</summary>
    public RunFigure Summary { get; init; }

    /// <summary>In the run summary, and so a sweep column.</summary>
    public bool InSummary => FromSummary is not null || Summary != RunFigure.None;

    public double? At(VmSnapshot vm, TickHost host) => Value?.Invoke(vm, host);

    /// <summary>Its run figure from a summary (null where the VM has none).</summary>
    public double? Of(VmTotals vm) => FromSummary is not null ? FromSummary(vm) : Summary != RunFigure.None ? vm.Figure(Name) : null;

    /// <summary>A value as the CSV and the table write it: whole numbers plainly, others to 3 decimals, invariant culture.</summary>
    public string Format(double? value) =>
        value is not double d ? "" : Text is not null ? Text(d) : Integral ? ((long)d).ToString(CultureInfo.InvariantCulture) : d.ToString("0.###", CultureInfo.InvariantCulture);
}

/// <summary>The per-VM figures of a run, in order. Every output takes its columns from here by name: the live
/// table (<see cref="VmMeasure.Header"/>), `run --csv` (<see cref="VmMeasure.Csv"/>), the meter
/// (<see cref="VmMeasure.Meter"/>), the trace (<see cref="VmMeasure.Trace"/>), the timeline plot
/// (<see cref="VmMeasure.Plot"/>), the run summary and the sweep's columns (<see cref="VmMeasure.InSummary"/>).
/// <para>To add a figure (e.g. the page cache's <c>pageCachePages</c>, <c>pageCacheDroppedPages</c>,
/// <c>pageCacheRefaults</c>, <c>dirtyWritebacks</c>): give <see cref="VmSnapshot"/> the value (read where
/// <see cref="ScenarioRunner.Snapshot"/> reads the VM), then add one line here, e.g.
/// <c>new("pageCachePages", "{page}", "Guest pages in its page cache") { Value = (v, _) =&gt; v.PageCachePages,
/// Kind = MeasureKind.Level, Csv = true, Header = "page cache", Importance = 2, Meter = "pagelab.vm.page_cache.pages",
/// Summary = RunFigure.End }</c>. It is then a CSV column (append it after the last CSV figure so the old columns
/// keep their places), a live-table column, a gauge, a key of <c>vms[]</c> in the summary and a sweep column; a
/// total (<c>Kind = MeasureKind.Total</c>, the default: dropped pages, refaults, writebacks) is a meter counter.
/// <c>Trace = true</c> adds it to a per-tick <c>sample</c> event of every VM that has it (a line per VM per tick
/// in every trace, so only for counts the seed decides); <c>Plot = true</c> draws it on the VM's second panel.
/// Document it in docs/run-summary.md's CSV table and, if metered, the README's meter table and
/// <c>MetricsTests.Documented</c>: the tests hold the docs and this list to each other.</para></summary>
public static class VmMeasures
{
    private static readonly string[] Levels = Enum.GetNames<MemoryLevel>().Select(n => n.ToLowerInvariant()).ToArray();

    public static readonly IReadOnlyList<VmMeasure> All =
    [
        new("heldFrames", "{frame}", "Host frames a VM holds (mapped or in its demand pool)")
            { Value = (v, _) => v.HeldFrames, Kind = MeasureKind.Level, Csv = true, Header = "held", Importance = 9, Meter = "pagelab.vm.frames.held" },
        new("allocationPages", "{page}", "Host pages the scheduler gives a VM")
            { Value = (v, _) => v.AllocationPages, Kind = MeasureKind.Level, Csv = true, Header = "alloc", Meter = "pagelab.vm.allocation" },
        new("balloonTargetPages", "{page}", "Guest pages a VM's balloon should hold")
        {
            Value = (v, _) => v.BalloonTarget, Kind = MeasureKind.Level, Csv = true, Header = "balloon", Importance = 8,
            Cell = v => $"{v.BalloonTarget}/{v.BalloonActual}", Meter = "pagelab.vm.balloon.target",
        },
        new("balloonActualPages", "{page}", "Guest pages a VM's balloon holds")
            { Value = (v, _) => v.BalloonActual, Kind = MeasureKind.Level, Csv = true, Meter = "pagelab.vm.balloon.actual" },
        new("activeEstimatePages", "{page}", "The sampled active working-set estimate")
        {
            Value = (v, _) => v.ActiveEstimatePages, Kind = MeasureKind.Level, Csv = true, Header = "active est", Importance = 7,
            Meter = "pagelab.vm.working_set.estimate",
        },
        new("workingSetPages", "{page}", "The workload's true working set (what the estimate is after)")
            { Value = (v, _) => v.WorkingSetPages, Kind = MeasureKind.Level, Csv = true, Header = "true WS", Importance = 3 },
        new("guestFreePages", "{page}", "Pages free in the guest OS")
            { Value = (v, _) => v.FreePages, Kind = MeasureKind.Level, Header = "guest free", Importance = 2 },
        new("guestPageOuts", "{page}", "Guest page-outs (writes to the guest's swap file)")
        {
            Value = (v, _) => v.SwapOuts, Csv = true, Header = "swap out", Importance = 6, Meter = "pagelab.vm.page_outs",
            FromSummary = t => t.GuestPageOuts,
        },
        new("guestPageIns", "{page}", "Guest page-ins (reads from the guest's swap file)")
        {
            Value = (v, _) => v.SwapIns, Csv = true, Header = "swap in", Importance = 10, Meter = "pagelab.vm.page_ins",
            FromSummary = t => t.GuestPageIns,
        },
        new("demandFaults", "{fault}", "Demand faults the fault engine resolved")
            { Value = (v, _) => v.DemandFaults, Csv = true, Header = "demand flt", Importance = 4, FromSummary = t => t.DemandFaults },
        new("hostStalls", "{fault}", "Demand faults the host had no frame for, so the guest paged out instead")
            { Value = (v, _) => v.HostStalls, Csv = true, Header = "host stall", Importance = 5, FromSummary = t => t.HostStalls },
        new("balloonPageOuts", "{page}", "Balloon pages the guest paged out")
            { Value = (v, _) => v.BalloonPageOuts, Header = "bal. out", Importance = 1 },
        new("condition", "{level}", "Memory condition: 0 plenty, 1 low, 2 critical")
        {
            Value = (v, _) => (int)v.Condition, Kind = MeasureKind.Level, Csv = true, Header = "condition", Importance = 11,
            Cell = v => $"{v.Condition}", Text = d => Levels[(int)d], Meter = "pagelab.vm.condition",
        },
        new("availablePages", "{page}", "Pages the guest could have now (the condition's true available pages)")
            { Value = (v, _) => v.TrueAvailablePages, Kind = MeasureKind.Level, Header = "avail", Importance = 2 },
        new("freeArenaFrames", "{frame}", "Free arena frames (the host's, on every VM's row)")
            { Value = (_, h) => h.FreeArenaFrames, Kind = MeasureKind.Level, Csv = true },
        new("sharedPages", "{page}", "Its guest pages mapping a shared frame")
            { Value = (v, _) => v.SharedPages, Kind = MeasureKind.Level, Group = MeasureGroup.Sharing, Csv = true, Header = "shared", Importance = 8 },
        new("cowBreaks", "{fault}", "Writes to its shared pages (copy-on-write faults)")
        {
            Value = (v, _) => v.CowBreaks, Group = MeasureGroup.Sharing, Csv = true, Header = "cow", Importance = 3,
            FromSummary = t => t.CowBreaks,
        },
        new("sharingCreditPages", "{page}", "Its part of the frames sharing saves (left out of its balloon target)")
            { Value = (v, _) => v.SharingCreditPages, Kind = MeasureKind.Level, Csv = true },
        new("hostSwapOuts", "{page}", "Its pages the host swapped out")
            { Value = (v, _) => v.HostSwapOuts, Csv = true, FromSummary = t => t.HostSwapOuts },
        new("sharedFrames", "{frame}", "Shared frames in the arena (the host's, on every VM's row)")
            { Value = (_, h) => h.SharedFrames, Kind = MeasureKind.Level, Csv = true },
        new("framesMoved", "{frame}", "Frames taken from VMs in the tick (the host's, on every VM's row)")
            { Value = (_, h) => h.FramesMoved, Kind = MeasureKind.Level, Csv = true },

        // Figures of the whole run: typed keys of vms[] in the summary, and sweep columns.
        Run("hostSwapIns", t => t.HostSwapIns), Run("oomKills", t => t.OomKills), Run("lowTicks", t => t.LowTicks),
        Run("criticalTicks", t => t.CriticalTicks), Run("framesIn", t => t.FramesIn), Run("framesOut", t => t.FramesOut),
        Run("allocationEndPages", t => t.AllocationEndPages), Run("allocationMinPages", t => t.AllocationMinPages),
        Run("allocationMaxPages", t => t.AllocationMaxPages), Run("peakActiveEstimatePages", t => t.PeakActiveEstimatePages),
        Run("injections", t => t.Injections), Run("recoveries", t => t.Recoveries), Run("guestPaging", t => t.GuestPaging),
        Run("balloonInflatedPages", t => t.BalloonInflatedPages), Run("hostSwappedByScheduler", t => t.HostSwappedByScheduler),
        Run("sharedPagesEnd", t => t.SharedPagesEnd),

        // Its application (a sqlite workload): null for a VM without one. In the summary as the `app` object.
        new("appTransactions", "{transaction}", "Transactions the application committed (or reads that answered)")
        {
            Value = (v, _) => v.App?.Transactions, Group = MeasureGroup.App, Csv = true, Header = "tx", Meter = "pagelab.app.transactions",
            Trace = true, Plot = true, FromSummary = t => t.App?.Transactions,
        },
        new("appTransactionsPerSecond", "{transaction}/s", "Transactions per second of the time its threads ran them (wall time)")
        {
            Value = (v, _) => v.App?.TransactionsPerSecond, Kind = MeasureKind.Level, Integral = false, Group = MeasureGroup.App,
            Header = "tx/s", Importance = 7, FromSummary = t => t.App?.TransactionsPerSecond,
        },
        new("appLatencyP50Ms", "ms", "Median latency of one transaction (wall time)")
        {
            Value = (v, _) => v.App?.LatencyP50Ms, Kind = MeasureKind.Level, Integral = false, Group = MeasureGroup.App,
            Header = "p50 ms", Importance = 2, FromSummary = t => t.App?.LatencyP50Ms,
        },
        new("appLatencyP99Ms", "ms", "99th percentile of one transaction's latency (wall time)")
        {
            Value = (v, _) => v.App?.LatencyP99Ms, Kind = MeasureKind.Level, Integral = false, Group = MeasureGroup.App,
            Header = "p99 ms", Importance = 6, FromSummary = t => t.App?.LatencyP99Ms,
        },
        new("appHeapBytesInGuest", "By", "Bytes the application holds through the guest heap")
        {
            Value = (v, _) => v.App?.HeapBytesInGuest, Kind = MeasureKind.Level, Group = MeasureGroup.App, Csv = true, Header = "heap bytes",
            Importance = 5, Meter = "pagelab.app.heap.in_guest", Trace = true, Plot = true, FromSummary = t => t.App?.HeapBytesInGuest,
        },
        new("appHeapBytesOutsideGuest", "By", "Bytes the application holds from anywhere else (must be 0)")
        {
            Value = (v, _) => v.App?.HeapBytesOutsideGuest, Kind = MeasureKind.Level, Group = MeasureGroup.App,
            Meter = "pagelab.app.heap.outside_guest", Trace = true, FromSummary = t => t.App?.HeapBytesOutsideGuest,
        },
        new("appCacheHits", "{hit}", "The application's page-cache hits")
        {
            Value = (v, _) => v.App?.CacheHits, Group = MeasureGroup.App, Header = "cache hit", Importance = 1,
            Meter = "pagelab.app.cache.hits", Trace = true, FromSummary = t => t.App?.CacheHits,
        },
        new("appCacheMisses", "{miss}", "The application's page-cache misses")
        {
            Value = (v, _) => v.App?.CacheMisses, Group = MeasureGroup.App, Csv = true, Header = "cache miss", Importance = 4,
            Meter = "pagelab.app.cache.misses", Trace = true, FromSummary = t => t.App?.CacheMisses,
        },
        new("appShrinkEvents", "{event}", "Times the memory condition made the application shrink and give pages back")
        {
            Value = (v, _) => v.App?.ShrinkEvents, Group = MeasureGroup.App, Csv = true, Header = "shrinks", Importance = 3,
            Trace = true, FromSummary = t => t.App?.ShrinkEvents,
        },
        new("appWrongResults", "{result}", "Reads whose answer differed from what was last written (must be 0)")
        {
            Value = (v, _) => v.App?.WrongResults, Group = MeasureGroup.App, Csv = true, Header = "wrong", Meter = "pagelab.app.wrong_results",
            Trace = true, FromSummary = t => t.App?.WrongResults,
        },
        new("appFailedTransactions", "{transaction}", "Transactions the application rolled back (SQLITE_NOMEM, busy)")
        {
            Value = (v, _) => v.App?.FailedTransactions, Group = MeasureGroup.App, Header = "failed", Importance = 2, Trace = true,
            FromSummary = t => t.App?.FailedTransactions,
        },

        // Its guest's page cache (a file workload's pages; 0 for a guest that reads no file). Summary keys by name.
        new("pageCachePages", "{page}", "Guest pages in its page cache (virtio-balloon's disk caches)")
        {
            Value = (v, _) => v.PageCachePages, Kind = MeasureKind.Level, Group = MeasureGroup.PageCache, Csv = true,
            Header = "page cache", Importance = 3, Meter = "pagelab.vm.page_cache.pages", Summary = RunFigure.End,
        },
        new("pageCacheDroppedPages", "{page}", "Page-cache pages its guest's reclaim dropped")
        {
            Value = (v, _) => v.PageCacheDroppedPages, Group = MeasureGroup.PageCache, Csv = true, Header = "cache dropped",
            Importance = 2, Meter = "pagelab.vm.page_cache.dropped", Summary = RunFigure.End,
        },
        new("pageCacheRefaults", "{fault}", "Misses on page-cache pages its guest had dropped (shadow entries)")
        {
            Value = (v, _) => v.PageCacheRefaults, Group = MeasureGroup.PageCache, Csv = true, Header = "refaults",
            Importance = 4, Meter = "pagelab.vm.page_cache.refaults", Summary = RunFigure.End,
        },
        new("dirtyWritebacks", "{page}", "Dirty page-cache pages its guest wrote back to their file")
        {
            Value = (v, _) => v.DirtyWritebacks, Group = MeasureGroup.PageCache, Csv = true, Header = "writebacks",
            Importance = 1, Meter = "pagelab.vm.page_cache.writebacks", Summary = RunFigure.End,
        },
    ];

    private static VmMeasure Run(string name, Func<VmTotals, double?> of) => new(name, "", $"the run summary's vms[].{name}") { FromSummary = of };

    /// <summary>The columns of `run --csv` after <c>tick</c> and <c>vm</c>.</summary>
    public static IEnumerable<VmMeasure> Csv => All.Where(m => m.Csv);

    /// <summary>The figures the meter publishes per VM, in order.</summary>
    public static readonly IReadOnlyList<VmMeasure> Metered = All.Where(m => m.Meter is not null).ToList();

    /// <summary>The figures of the trace's per-tick sample events.</summary>
    public static readonly IReadOnlyList<VmMeasure> Traced = All.Where(m => m.Trace).ToList();

    public static VmMeasure Named(string name) =>
        All.FirstOrDefault(m => m.Name == name) ?? throw new ArgumentException($"no per-VM measure named '{name}'", nameof(name));

    /// <summary>The live table's columns for a tick: every figure with a header, of the groups the run has.</summary>
    public static List<VmMeasure> TableColumns(bool sharing, bool app, bool pageCache = false) =>
        All.Where(m => m.Header is not null && m.Group switch
        {
            MeasureGroup.Vm => true,
            MeasureGroup.Sharing => sharing,
            MeasureGroup.App => app,
            MeasureGroup.PageCache => pageCache,
            _ => false,
        }).ToList();

    /// <summary>A live-table cell ("-" where the VM has no such figure).</summary>
    public static string CellOf(VmMeasure m, VmSnapshot vm, TickHost host) =>
        m.At(vm, host) is double d ? m.Cell?.Invoke(vm) ?? m.Format(d) : "-";
}
