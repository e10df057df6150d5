// One value type per address space, so guest pages and host frames cannot be mixed up,
// and inclusive ranges (Start, Last, Length) over each.
namespace PageLab.Core;

/// <summary>A guest physical page number within one VM.</summary>
public readonly record struct GuestPage(ulong Value) : IComparable<GuestPage>
{
    public int CompareTo(GuestPage other) => Value.CompareTo(other.Value);
    public GuestPage? CheckedAdd(ulong pages) => Value + pages < Value ? null : new GuestPage(Value + pages);
    public override string ToString() => $"gpage {Value}";
}

/// <summary>A frame (host physical page) number within the arena.</summary>
public readonly record struct HostFrame(uint Value) : IComparable<HostFrame>
{
    public int CompareTo(HostFrame other) => Value.CompareTo(other.Value);
    public override string ToString() => $"frame {Value}";
}

/// <summary>A non-empty run of consecutive host frames.</summary>
public readonly record struct FrameRun
{
    public FrameRun(HostFrame start, uint length)
    {
        if (length == 0) throw new ArgumentOutOfRangeException(nameof(length), length, "a frame run is never empty");
        if ((ulong)start.Value + length - 1 > uint.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(length), length, $"run from {start} passes the largest frame number");
        Start = start;
        Length = length;
    }

    public HostFrame Start { get; }
    public uint Length { get; }
    public HostFrame Last => new(Start.Value + Length - 1);
    public bool Contains(HostFrame f) => f.Value >= Start.Value && f.Value <= Last.Value;
    public IEnumerable<HostFrame> Frames() { for (uint i = 0; i < Length; i++) yield return new HostFrame(Start.Value + i); }
    public override string ToString() => Length == 1 ? Start.ToString() : $"frames {Start.Value}..{Last.Value}";
}

/// <summary>A non-empty run of consecutive guest pages.</summary>
public readonly record struct PageRun
{
    public PageRun(GuestPage start, ulong length)
    {
        if (length == 0) throw new ArgumentOutOfRangeException(nameof(length), length, "a page run is never empty");
        if (start.CheckedAdd(length - 1) is null)
            throw new ArgumentOutOfRangeException(nameof(length), length, $"run from {start} overflows");
        Start = start;
        Length = length;
    }

    public GuestPage Start { get; }
    public ulong Length { get; }
    public GuestPage Last => new(Start.Value + Length - 1);
    public override string ToString() => Length == 1 ? Start.ToString() : $"gpages {Start.Value}..{Last.Value}";
}
