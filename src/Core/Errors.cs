// Exceptions for expected failures of memory operations; each carries the values that broke.
using PageLab.Core.Host;

namespace PageLab.Core;

/// <summary>An operation would need more VMAs than the budget kept under vm.max_map_count.</summary>
public sealed class MapLimitException(string operation, long mapsInUse, long budget, long? maxMapCount)
    : InvalidOperationException(
        $"{operation} would pass the mapping budget ({mapsInUse} mappings in use, budget {budget}, " +
        $"vm.max_map_count={maxMapCount?.ToString() ?? "unknown"}). The VM is unchanged. Use fewer, longer " +
        "frame runs, or raise the limit: sysctl -w vm.max_map_count=262144")
{
    public long MapsInUse { get; } = mapsInUse;
    public long Budget { get; } = budget;
}

/// <summary>The arena has fewer free frames than a request needs.</summary>
public sealed class ArenaExhaustedException(long requested, long free, long total)
    : InvalidOperationException($"requested {requested} frames but the arena has {free} free of {total}")
{
    public long Requested { get; } = requested;
    public long Free { get; } = free;
}

/// <summary>A frame was used in a way its current state does not allow.</summary>
public sealed class FrameStateException(HostFrame frame, FrameState actual, string expected)
    : InvalidOperationException($"{frame} is {actual}, expected {expected}")
{
    public HostFrame Frame { get; } = frame;
    public FrameState Actual { get; } = actual;
}
