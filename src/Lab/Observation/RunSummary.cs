// A run's results as one JSON object (`pagelab run --json`): what ran (scenario, seed, ticks), per-VM and
// host totals at the end, and wall-clock timings. Fields are documented in docs/run-summary.md.
using System.Text.Json;
using System.Text.Json.Serialization;
using PageLab.Core.Condition;
using PageLab.Core.Host;
using PageLab.Core.Sharing;
using PageLab.Lab.Scenarios;

namespace PageLab.Lab.Observation;

/// <summary>One run, summarized. Every field is always written (null where it does not apply), so the
/// object has the same keys for every run; <see cref="Format"/> changes when a field changes meaning.</summary>
public sealed record RunSummary
{
    /// <summary>The version of this object's layout.</summary>
    public int Format { get; init; } = 1;
    public required string Scenario { get; init; }
    /// <summary>The scenario file the run was given (full path), or null for the built-in scenario.</summary>
    public string? ScenarioFile { get; init; }
    public required int Seed { get; init; }
    /// <summary>False for a static partition (`--static`, or the static half of `--compare`).</summary>
    public required bool Adaptive { get; init; }
    /// <summary>The allocation policy the run used (static, esx, pagelab or a user's class).</summary>
    public required string Policy { get; init; }
    public required bool WorkConserving { get; init; }
    /// <summary>The mechanisms that took memory back, in ESX's order: e.g. "share,balloon,swap", "balloon".</summary>
    public string Reclamation { get; init; } = "balloon";
    /// <summary>Pages one demand fault mapped at most (the scenario's faultAroundPages; 1: no fault-around).</summary>
    public int FaultAroundPages { get; init; } = 1;
    /// <summary>The ticks the run was to have.</summary>
    public required int Ticks { get; init; }
    /// <summary>The ticks it had: <see cref="Ticks"/>, or fewer when it was interrupted.</summary>
    public required int TicksRun { get; init; }
    /// <summary>The signal that stopped the run early ("SIGINT", "SIGTERM"), null when it ran to the end.</summary>
    public string? Interrupted { get; init; }
    /// <summary>True when every frame is free or owned by exactly one guest page or pool at the end.</summary>
    public required bool AccountingOk { get; init; }
    public required List<string> AccountingProblems { get; init; }
    public required HostTotals Host { get; init; }
    /// <summary>Page sharing over the run; null when the reclamation order does not share.</summary>
    public SharingTotals? Sharing { get; init; }
    public required List<VmTotals> Vms { get; init; }
    public required RunTimings Timings { get; init; }

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>This summary as one line of JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    // The figures of VmMeasures with no typed key of their own: each under its name, from its per-tick values.
    internal static Dictionary<string, object?>? FiguresOf(RunTimeline timeline, VmTimeline vm, IEnumerable<VmMeasure> all)
    {
        List<VmMeasure> measures = all.Where(m => m.Summary != RunFigure.None).ToList();
        if (measures.Count == 0) return null;
        var figures = new Dictionary<string, object?>();
        foreach (VmMeasure m in measures)
        {
            double[] values = timeline.Series(vm, m).OfType<double>().ToArray();
            double? value = values.Length == 0 ? null : m.Summary == RunFigure.Max ? values.Max() : values[^1];
            figures[m.Name] = value is not double d ? null : m.Integral ? (long)d : (object)d;
        }
        return figures;
    }

    public static RunSummary FromJson(string json) =>
        JsonSerializer.Deserialize<RunSummary>(json, Json) ?? throw new JsonException("the text holds no run summary (null)");

    /// <summary>The summary of a run from its timeline, its last tick and its arena at the end.</summary>
    /// <param name="scanner">The run's sharing scanner (<see cref="PageLab.Core.Scheduling.MemoryScheduler.Scanner"/>), null if none.</param>
    public static RunSummary Of(RunTimeline timeline, TickSnapshot last, HostArena arena, IReadOnlyList<string> accountingProblems,
        RunTimings timings, string? scenarioFile = null, string? interrupted = null, SharingMetrics? scanner = null)
    {
        ArgumentNullException.ThrowIfNull(timeline);
        ArgumentNullException.ThrowIfNull(last);
        ArgumentNullException.ThrowIfNull(arena);
        Scenario s = timeline.Scenario;
        FrameCounts counts = arena.Counts;
        var vms = new List<VmTotals>();
        foreach (VmRunSummary v in timeline.Summarize())
        {
            VmSnapshot end = last.Vms.First(x => x.Name == v.Name);
            VmSpec spec = s.Vms.First(x => x.Name == v.Name);
            vms.Add(new VmTotals(
                v.Name, spec.Pages, spec.Shares, v.MinAllocationPages, v.MaxAllocationPages, v.FinalAllocationPages, v.FinalHeldFrames,
                v.PeakActiveEstimatePages, v.FramesIn, v.FramesOut, v.GuestPageOuts, v.GuestPageIns, v.DemandFaults, v.HostStalls,
                end.OomKills, v.LowTicks, v.CriticalTicks, end.Condition,
                timeline.Markers.Count(m => m.Vm == v.Name && m.Kind == RunEventKind.Injection),
                timeline.Markers.Count(m => m.Vm == v.Name && m.Kind == RunEventKind.Recovery), end.HostSwapOuts, end.HostSwapIns)
            {
                BalloonInflatedPages = timeline.Vm(v.Name).BalloonInflatedPages, HostSwappedByScheduler = timeline.Vm(v.Name).HostSwappedByScheduler,
                SharedPagesEnd = end.SharedPages, SharingCreditPagesEnd = end.SharingCreditPages, CowBreaks = end.CowBreaks,
                ImageWrongReads = end.ImageWrongReads, FaultedAroundPages = end.FaultedAroundPages,
                FramesTakenFromOthers = end.FramesTakenFromOthers, App = end.App, Figures = FiguresOf(timeline, timeline.Vm(v.Name), VmMeasures.All),
            });
        }
        SharingTotals? sharing = scanner is SharingMetrics m
            ? new SharingTotals(m.PagesScanned, m.PagesMerged, m.UniformPagesMerged, m.HashMatchesThatDiffered, last.Sharing.SharedFrames,
                last.Sharing.SharingPages, last.Sharing.FramesSaved, timeline.SharingPages.Zip(timeline.SharedFrames, (p, f) => p - f).DefaultIfEmpty().Max(),
                vms.Aggregate(0UL, (n, v) => n + v.CowBreaks), m.ScanTime.TotalSeconds,
                timings.TicksSeconds + timings.BootSeconds > 0 ? m.PagesScanned / (timings.TicksSeconds + timings.BootSeconds) : 0,
                m.MapLimitHits)
            : null;
        return new RunSummary
        {
            Scenario = s.Name, ScenarioFile = scenarioFile, Seed = s.Seed, Adaptive = PageLab.Core.Scheduling.PolicyCatalog.TraitsOf(s.PolicyName).Adaptive, Policy = s.PolicyName, WorkConserving = s.WorkConserving && PageLab.Core.Scheduling.PolicyCatalog.TraitsOf(s.PolicyName).WorkConserving, Ticks = s.Ticks, TicksRun = last.Tick,
            Reclamation = PageLab.Core.Scheduling.ReclamationParse.Format(PageLab.Core.Scheduling.ReclamationParse.Parse(s.Reclamation)), Sharing = sharing,
            FaultAroundPages = s.FaultAroundPages,
            Interrupted = interrupted, AccountingOk = accountingProblems.Count == 0, AccountingProblems = accountingProblems.ToList(),
            Host = new HostTotals(s.HostPages, arena.FrameCount, arena.PageSize, counts.Free, counts.Retired, last.TransferredFrames)
            {
                FramesMovedPerTick = timeline.FramesMovedPerTick,
            },
            Vms = vms, Timings = timings,
        };
    }
}

/// <summary>The host at the end of a run.</summary>
/// <param name="HostPages">The pages the scheduler shared out (the scenario's hostPages).</param>
/// <param name="ArenaFrames">Frames of the arena: hostPages plus demand pools, a step's frames in flight, parity and spares.</param>
/// <param name="PageSizeBytes">Bytes per page and frame.</param>
/// <param name="FreeFramesEnd">Arena frames free at the end.</param>
/// <param name="RetiredFrames">Frames taken out of service (after memory errors).</param>
/// <param name="FramesMovedBetweenVms">Frames reclaimed from one VM's balloon and mapped into another, over the run.</param>
public sealed record HostTotals(ulong HostPages, long ArenaFrames, int PageSizeBytes, long FreeFramesEnd, long RetiredFrames, long FramesMovedBetweenVms)
{
    /// <summary>Churn: frames taken from VMs (by their balloons, or host-swapped by the scheduler) per tick
    /// after boot, whether they went straight to another VM or through the free arena.</summary>
    public double FramesMovedPerTick { get; init; }
}

/// <summary>One VM over a run: its allocation, frames moved, guest paging, faults, condition and errors.</summary>
public sealed record VmTotals(
    string Name, ulong Pages, int Shares, ulong AllocationMinPages, ulong AllocationMaxPages, ulong AllocationEndPages, long HeldFramesEnd,
    ulong PeakActiveEstimatePages, long FramesIn, long FramesOut, ulong GuestPageOuts, ulong GuestPageIns, ulong DemandFaults,
    ulong HostStalls, ulong OomKills, int LowTicks, int CriticalTicks, MemoryLevel ConditionEnd, int Injections, int Recoveries,
    ulong HostSwapOuts, ulong HostSwapIns)
{
    /// <summary>Guest page-outs plus page-ins: the paging the scheduler is there to keep low.</summary>
    public ulong GuestPaging => GuestPageOuts + GuestPageIns;
    /// <summary>Pages its balloon took over the run.</summary>
    public long BalloonInflatedPages { get; init; }
    /// <summary>Pages the scheduler host-swapped out of it (reclamation's last resort), over the run.</summary>
    public long HostSwappedByScheduler { get; init; }
    /// <summary>Its guest pages mapping a shared frame at the end.</summary>
    public long SharedPagesEnd { get; init; }
    /// <summary>Its part of the frames sharing saved at the end (left out of its balloon target).</summary>
    public ulong SharingCreditPagesEnd { get; init; }
    /// <summary>Writes to its shared pages over the run (copy-on-write faults).</summary>
    public ulong CowBreaks { get; init; }
    /// <summary>Reads of its image that saw anything but the image's bytes (must be 0).</summary>
    public long ImageWrongReads { get; init; }
    /// <summary>Never-used pages its demand faults mapped besides their own (fault-around), over the run.</summary>
    public ulong FaultedAroundPages { get; init; }
    /// <summary>Frames its faults took, on a full arena, by host-swapping another VM's page, over the run.</summary>
    public ulong FramesTakenFromOthers { get; init; }
    /// <summary>Its application (a sqlite workload) over the run; null for VMs without one.</summary>
    public AppTotals? App { get; init; }

    /// <summary>The figures of <see cref="VmMeasures"/> that have no typed key here (<see cref="VmMeasure.Summary"/>),
    /// written as keys of this object by their names; read back as JSON values.</summary>
    [JsonExtensionData]
    public Dictionary<string, object?>? Figures { get; init; }

    /// <summary>A figure of <see cref="Figures"/> by name, null when absent or null.</summary>
    public double? Figure(string name) => Figures?.GetValueOrDefault(name) switch
    {
        JsonElement { ValueKind: JsonValueKind.Number } e => e.GetDouble(),
        long l => l,
        double d => d,
        int i => i,
        _ => null,
    };
}

/// <summary>What the application did over a run (<c>app</c> of a VM in the run summary).</summary>
public sealed record AppTotals(
    string Kind, long Transactions, double TransactionsPerSecond, double LatencyP50Ms, double LatencyP99Ms, long HeapBytesInGuest,
    long HeapBytesOutsideGuest, long CacheHits, long CacheMisses, long ShrinkEvents, long WrongResults)
{
    /// <summary>Transactions that failed (SQLITE_NOMEM from a full heap, or busy) and were rolled back.</summary>
    public long FailedTransactions { get; init; }
}

/// <summary>Page sharing over a run (<c>sharing</c> in the JSON).</summary>
/// <param name="PagesScanned">Pages the scanner looked at.</param>
/// <param name="PagesMerged">Pages it merged onto shared frames (the first page of a new shared frame included).</param>
/// <param name="UniformPagesMerged">Of those, pages of one 64-bit word repeated (zero pages, balloon values).</param>
/// <param name="HashMatchesThatDiffered">Hash matches the engine's byte compare refused.</param>
/// <param name="SharedFramesEnd">Shared frames at the end.</param>
/// <param name="SharingPagesEnd">Guest pages mapping them at the end.</param>
/// <param name="FramesSavedEnd">SharingPagesEnd − SharedFramesEnd.</param>
/// <param name="PeakFramesSaved">The most frames sharing saved at a recorded tick.</param>
/// <param name="CowBreaks">Copy-on-write breaks in all VMs over the run.</param>
/// <param name="ScanCpuSeconds">Time the scanner spent scanning: the wall time of its batches on the scheduler's thread
/// (its CPU time, less any time the thread was preempted).</param>
/// <param name="ScanRatePagesPerSecond">Pages scanned per second of the run (boot and ticks).</param>
/// <param name="MapLimitHits">Merges refused because the mapping budget (vm.max_map_count) was full.</param>
public sealed record SharingTotals(long PagesScanned, long PagesMerged, long UniformPagesMerged, long HashMatchesThatDiffered,
    long SharedFramesEnd, long SharingPagesEnd, long FramesSavedEnd, long PeakFramesSaved, ulong CowBreaks, double ScanCpuSeconds,
    double ScanRatePagesPerSecond, long MapLimitHits);

/// <summary>Wall-clock times of a run, in seconds (milliseconds for the mean tick). Not reproducible: the
/// same seed gives the same totals, not the same timings.</summary>
/// <param name="BootSeconds">Creating the arena, VMs and guests, and inflating balloons to their start.</param>
/// <param name="TicksSeconds">The ticks.</param>
/// <param name="MeanTickMilliseconds">TicksSeconds over the ticks run (0 when none ran).</param>
/// <param name="TotalSeconds">The whole run: boot, ticks, checks, trace, tables and plot.</param>
public sealed record RunTimings(double BootSeconds, double TicksSeconds, double MeanTickMilliseconds, double TotalSeconds);
