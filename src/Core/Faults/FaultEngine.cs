// The process-wide side of the native fault engine: installing the SIGSEGV handler once, the mapping
// budget kept under vm.max_map_count, and turning libpagelab status codes into exceptions.
using PageLab.Native;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Faults;

public static class FaultEngine
{
    private static readonly Lock Gate = new();

    /// <summary>Mappings kept free under vm.max_map_count for the runtime, thread stacks and libraries.</summary>
    public const long Headroom = 4096;

    /// <summary>Installs the handler (after the runtime's own, which it chains to) and sets the budget.</summary>
    public static void EnsureInstalled()
    {
        if (Lib.Installed() != 0) return;
        lock (Gate)
        {
            if (Lib.Installed() != 0) return;
            int rc = Lib.Install();
            if (rc != 0) throw new ErrnoException("sigaction(SIGSEGV)", -rc);
            HostSystemInfo info = IHostOs.Current.Describe();
            MaxMapCount = info.MaxMapCount;
            Lib.SetMapBudget(DefaultBudget(info));
        }
    }

    /// <summary>The budget for PageLab's own mappings: vm.max_map_count less what the process already
    /// uses and <see cref="Headroom"/>.</summary>
    public static long DefaultBudget(HostSystemInfo info) =>
        Math.Max(1024, (info.MaxMapCount ?? 65530) - info.CurrentMappings - Headroom);

    public static bool Installed => Lib.Installed() != 0;
    public static long? MaxMapCount { get; private set; }

    /// <summary>Flags of the runtime handler PageLab chains to (null before install).</summary>
    public static long? PreviousHandlerFlags => Lib.PreviousFlags() is var f and >= 0 ? f : null;

    public static long MapBudget
    {
        get => Lib.MapBudget();
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            Lib.SetMapBudget(value);
        }
    }

    public static long MapsInUse => Lib.MapsInUse();

    /// <summary>Faults the handler passed on to the runtime (addresses PageLab does not own, or fatal ones).</summary>
    public static ulong ChainedFaults => Lib.ChainedFaults();

    internal static void Check(int rc, string operation)
    {
        if (rc >= 0) return;
        throw rc switch
        {
            Lib.EMAPLIMIT => new MapLimitException(operation, MapsInUse, MapBudget, MaxMapCount),
            Lib.EINVAL => new ArgumentException($"{operation}: rejected by the fault engine (bad page or frame)"),
            Lib.ENOREGION => new ObjectDisposedException(operation, "the VM's region no longer exists"),
            Lib.ENOARENA => new ObjectDisposedException(operation, "the arena no longer exists"),
            Lib.EFULL => new InvalidOperationException($"{operation}: the fault engine's arena, region or group table is full"),
            Lib.ESTATE => new InvalidOperationException($"{operation}: a page is not in the state this needs"),
            Lib.ELOST => new InvalidOperationException($"{operation}: no good copy (parity and disk both failed the hash check)"),
            Lib.ENOFRAME => new InvalidOperationException($"{operation}: the arena has no free frame"),
            Lib.EBUSY => new InvalidOperationException($"{operation}: the arena still has live VMs"),
            Lib.ENOSHARE => new InvalidOperationException($"{operation}: the VM has not opted in to page sharing (GuestVm.EnableSharing)"),
            Lib.EAGAIN => new InvalidOperationException($"{operation}: no frame while another VM's engine lock stayed held; try again"),
            _ => new ErrnoException(operation, -rc),
        };
    }
}

/// <summary>Per-VM fault counters kept by the native handler (struct pl_counters).</summary>
/// <param name="PoolEmpty">Faults that found the demand pool empty and took a frame another way.</param>
/// <param name="MapFailures">Handler OS-call failures or budget hits.</param>
/// <param name="HostSwapOuts">Pages the host swapped out to free a frame for a fault.</param>
/// <param name="HostSwapIns">Host-swapped pages brought back on a touch.</param>
/// <param name="Contained">Poisoned pages with no good copy, given a zero frame and flagged lost.</param>
/// <param name="Overcommits">Free frames taken past the VM's frame limit (nothing to swap out).</param>
/// <param name="Spurious">Faults with nothing to do (another thread got there first, or a repaired mapping).</param>
/// <param name="EventsDropped">Handler events not collected before the engine's ring overflowed.</param>
/// <param name="CowBreaks">Writes to shared pages given a private copy (copy-on-write faults, and unshares).</param>
/// <param name="PagesMerged">Pages merged onto a shared frame.</param>
/// <param name="FaultedAround">Never-used pages demand faults mapped besides their own (fault-around).</param>
/// <param name="TakenFromOthers">Frames faults took, on a full arena, by host-swapping out another VM's page.</param>
public readonly record struct FaultCounters(
    ulong DemandFaults, ulong SampleTouches, ulong PoolEmpty, ulong MapFailures, ulong TrackedWrites, ulong HandlerRecoveries,
    ulong HostSwapOuts, ulong HostSwapIns, ulong Contained, ulong Overcommits, ulong Spurious, ulong EventsDropped,
    ulong CowBreaks = 0, ulong PagesMerged = 0, ulong FaultedAround = 0, ulong TakenFromOthers = 0)
{
    /// <summary>The engine's counters, taken by name from its struct (never by position).</summary>
    internal static FaultCounters From(in Lib.RegionCounters c) => new(
        DemandFaults: c.DemandFaults, SampleTouches: c.SampleTouches, PoolEmpty: c.PoolEmpty, MapFailures: c.MapFailures,
        TrackedWrites: c.TrackedWrites, HandlerRecoveries: c.HandlerRecoveries, HostSwapOuts: c.HostSwapOuts,
        HostSwapIns: c.HostSwapIns, Contained: c.Contained, Overcommits: c.Overcommits, Spurious: c.Spurious,
        EventsDropped: c.EventsDropped, CowBreaks: c.CowBreaks, PagesMerged: c.PagesMerged, FaultedAround: c.FaultedAround,
        TakenFromOthers: c.TakenFromOthers);
}
