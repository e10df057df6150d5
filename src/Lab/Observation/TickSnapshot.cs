// What a run observes of every VM at one tick: the per-VM snapshot the live table, timeline, summary and
// metrics are read from, and the tick's host figures.
using PageLab.Core.Condition;
using PageLab.Core.Host;
using PageLab.Core.Scheduling;

namespace PageLab.Lab.Observation;

/// <summary>One VM's memory at one tick (a superset of the virtio-balloon statistics).</summary>
public sealed record VmSnapshot(
    string Name, ulong Pages, ulong AllocationPages, long HeldFrames, ulong BalloonTarget, ulong BalloonActual,
    ulong ActiveEstimatePages, ulong WorkingSetPages, ulong FreePages, ulong AvailablePages,
    ulong SwapIns, ulong SwapOuts, ulong MajorFaults, ulong MinorFaults, ulong DemandFaults, ulong HostStalls,
    ulong BalloonPageOuts, ulong OomKills, MemoryLevel Condition, ulong TrueAvailablePages,
    ulong HostSwapOuts = 0, ulong HostSwapIns = 0)
{
    /// <summary>Guest pages mapping a shared frame now.</summary>
    public long SharedPages { get; init; }
    /// <summary>Writes to shared pages so far (each a copy-on-write fault and a frame).</summary>
    public ulong CowBreaks { get; init; }
    /// <summary>The VM's part of the frames sharing saves (its balloon target leaves it out).</summary>
    public ulong SharingCreditPages { get; init; }
    /// <summary>Image reads that saw anything but the image's bytes so far (must be 0).</summary>
    public long ImageWrongReads { get; init; }
    /// <summary>Never-used pages its demand faults mapped besides their own so far (fault-around).</summary>
    public ulong FaultedAroundPages { get; init; }
    /// <summary>Frames its faults took by host-swapping another VM's page on a full arena so far.</summary>
    public ulong FramesTakenFromOthers { get; init; }
    /// <summary>Its application's totals so far (a sqlite workload), or null.</summary>
    public AppTotals? App { get; init; }
    /// <summary>Its guest's page-cache pages now (virtio-balloon's disk caches).</summary>
    public ulong PageCachePages { get; init; }
    /// <summary>Page-cache pages its guest's reclaim dropped, misses on dropped pages, dirty pages written back, so far.</summary>
    public ulong PageCacheDroppedPages { get; init; }
    public ulong PageCacheRefaults { get; init; }
    public ulong DirtyWritebacks { get; init; }
}

public sealed record TickSnapshot(int Tick, IReadOnlyList<VmSnapshot> Vms, long FreeFrames, long TransferredFrames, StepReport Step)
{
    /// <summary>Shared frames in the arena, and the guest pages (of all VMs) mapping them.</summary>
    public SharingCounts Sharing { get; init; }
}
