// The life of a host frame. Free frames are punched holes (they read as zero and cost no memory).
namespace PageLab.Core.Host;

public enum FrameState : byte
{
    /// <summary>In the allocator; a hole in the arena, reads as zero.</summary>
    Free,
    /// <summary>Allocated and owned by the hypervisor side (not mapped by any guest).</summary>
    Held,
    /// <summary>Owned by one VM: mapped at one of its guest pages, or waiting in its demand pool.</summary>
    Guest,
    /// <summary>Holds parity over a set of guest pages; no guest can see it.</summary>
    Parity,
    /// <summary>Taken out of service for good (e.g. after an uncorrected error); never reused.</summary>
    Retired,
    /// <summary>Content shared by one or more guest pages (of one or several VMs), all mapping it read-only.</summary>
    Shared,
}

/// <summary>How many frames are in each state.</summary>
public readonly record struct FrameCounts(long Free, long Held, long Guest, long Parity, long Retired, long Shared = 0)
{
    public long Total => Free + Held + Guest + Parity + Retired + Shared;
}

/// <summary>Content-based sharing at one instant: frames in state Shared and the guest pages mapping them.</summary>
public readonly record struct SharingCounts(long SharedFrames, long SharingPages)
{
    /// <summary>Frames sharing saves: each page beyond the first on a shared frame would need a frame of its own.</summary>
    public long FramesSaved => SharingPages - SharedFrames;
}
