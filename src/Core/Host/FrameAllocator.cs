// Pure free-frame bookkeeping for the arena: a bitmap of free frames, handing frames out as one
// contiguous run when one is long enough (fewer guest mappings), else the lowest free frames.
using System.Numerics;

namespace PageLab.Core.Host;

public sealed class FrameAllocator
{
    private readonly ulong[] _used; // bit set = not free; bits past Capacity are set for good

    public FrameAllocator(uint capacity)
    {
        if (capacity == 0) throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "an allocator needs at least one frame");
        Capacity = capacity;
        FreeCount = capacity;
        _used = new ulong[(capacity + 63) / 64];
        for (ulong bit = capacity; bit < (ulong)_used.Length * 64; bit++) _used[bit / 64] |= 1UL << (int)(bit % 64);
    }

    public uint Capacity { get; }
    public long FreeCount { get; private set; }

    public bool IsFree(HostFrame frame) =>
        frame.Value < Capacity && (_used[frame.Value / 64] & (1UL << (int)(frame.Value % 64))) == 0;

    /// <summary>Takes <paramref name="count"/> free frames, appended to <paramref name="into"/> as ascending runs.</summary>
    /// <returns>false (and nothing taken) when fewer than <paramref name="count"/> frames are free.</returns>
    public bool TryAllocate(uint count, List<FrameRun> into)
    {
        if (count == 0) throw new ArgumentOutOfRangeException(nameof(count), count, "allocate at least one frame");
        if (count > FreeCount) return false;

        // First fit for one run long enough.
        for (uint at = NextFree(0); at < Capacity;)
        {
            uint end = NextUsed(at);
            if (end - at >= count)
            {
                Take(at, count, into);
                return true;
            }
            at = NextFree(end);
        }

        // Fragmented: the lowest free frames, run by run.
        uint left = count;
        for (uint at = NextFree(0); left > 0; at = NextFree(at))
        {
            uint take = Math.Min(left, NextUsed(at) - at);
            Take(at, take, into);
            at += take;
            left -= take;
        }
        return true;
    }

    /// <summary>Marks one specific free frame used (e.g. to retire it); false if it was not free.</summary>
    public bool TryTake(HostFrame frame)
    {
        if (!IsFree(frame)) return false;
        SetUsed(frame.Value, 1, used: true);
        FreeCount--;
        return true;
    }

    /// <summary>Returns a run; every frame in it must be allocated.</summary>
    public void Free(FrameRun run)
    {
        if (run.Last.Value >= Capacity)
            throw new ArgumentOutOfRangeException(nameof(run), run, $"run passes the arena's last frame {Capacity - 1}");
        foreach (HostFrame f in run.Frames())
            if (IsFree(f)) throw new InvalidOperationException($"{f} is already free (double free)");
        SetUsed(run.Start.Value, run.Length, used: false);
        FreeCount += run.Length;
    }

    private void Take(uint at, uint length, List<FrameRun> into)
    {
        SetUsed(at, length, used: true);
        FreeCount -= length;
        into.Add(new FrameRun(new HostFrame(at), length));
    }

    private void SetUsed(uint at, uint length, bool used)
    {
        for (uint f = at; f < at + length; f++)
        {
            ulong mask = 1UL << (int)(f % 64);
            if (used) _used[f / 64] |= mask;
            else _used[f / 64] &= ~mask;
        }
    }

    private uint NextFree(uint from) => Next(from, invert: true);
    private uint NextUsed(uint from) => Next(from, invert: false);

    // First frame >= from whose bit is clear (invert) or set; Capacity if none.
    private uint Next(uint from, bool invert)
    {
        if (from >= Capacity) return Capacity;
        int w = (int)(from / 64);
        ulong word = (invert ? ~_used[w] : _used[w]) & (ulong.MaxValue << (int)(from % 64));
        while (word == 0)
        {
            if (++w == _used.Length) return Capacity;
            word = invert ? ~_used[w] : _used[w];
        }
        return Math.Min(Capacity, (uint)(w * 64 + BitOperations.TrailingZeroCount(word)));
    }
}
