// Changing a VM's pages: backing, unbacking, remapping, the demand-zero pool, host swap, fault-around,
// frame limits and working-set sampling; each call is one engine transaction (all or nothing).
using System.Buffers;
using System.Numerics;
using System.Runtime.InteropServices;
using PageLab.Core.Faults;
using PageLab.Core.Host;
using PageLab.Native;
using Microsoft.Win32.SafeHandles;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Guest;

public sealed unsafe partial class GuestVm
{
    /// <summary>Frames this VM may hold before the fault handler host-swaps one of its pages rather than
    /// take a free frame (null: no limit). The scheduler sets it to the VM's allocation.</summary>
    public void SetFrameLimit(ulong? frames)
    {
        using RegionUse use = Use();
        FaultEngine.Check(Lib.SetFrameLimit(use.Id, frames ?? ulong.MaxValue), $"{Name}: setting the frame limit");
    }

    /// <summary>How many pages a demand fault maps: besides its own page, the never-used pages of its
    /// aligned block of this many (a power of two, 1 to 64; 1, the default, maps only the faulting page).
    /// One signal and one mapping call then serve a guest's first touches of a whole block, as a huge page
    /// does; pages that ever had a frame are never filled this way, so a page the balloon gave back stays
    /// given back.</summary>
    public void SetFaultAround(int pages)
    {
        if (pages < 1 || pages > MaxFaultAround || !BitOperations.IsPow2(pages))
            throw new ArgumentOutOfRangeException(nameof(pages), pages, $"{Name}: fault-around must be a power of two from 1 to {MaxFaultAround} pages");
        using RegionUse use = Use();
        FaultEngine.Check(Lib.SetFaultAround(use.Id, (uint)pages), $"{Name}: setting fault-around to {pages} pages");
    }

    /// <summary>The largest fault-around block (the handler keeps its frame list on the signal stack).</summary>
    public const int MaxFaultAround = 64;

    /// <summary>Host-swaps up to <paramref name="pages"/> of the VM's backed pages now, giving their frames
    /// back to the arena. Returns how many.</summary>
    public int HostSwapOut(int pages)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(pages);
        using RegionUse use = Use();
        int n = Lib.HostSwapOut(use.Id, (uint)pages);
        FaultEngine.Check(n, $"{Name}: host-swapping {pages} pages");
        return n;
    }

    /// <summary>Backs unbacked pages with newly allocated zero frames (one contiguous run if the arena has
    /// one). Fails, changing nothing, if a page got a frame meanwhile (a guest touch).</summary>
    public void Back(GuestPage first, ulong count)
    {
        CheckRange(first, count);
        HostFrame[] frames = _arena.Allocate(checked((uint)count));
        try
        {
            int rc = MapFrames(first, frames, Lib.MapBack, out _);
            if (rc == Lib.ESTATE)
            {
                ulong backed = first.Value;
                while (backed < first.Value + count - 1 && StateOf(new GuestPage(backed)) == GuestPageState.Unbacked) backed++;
                throw new InvalidOperationException($"{Name}: {new GuestPage(backed)} is already backed; unback it or remap it");
            }
            FaultEngine.Check(rc, $"{Name}: backing {new PageRun(first, count)}");
        }
        catch
        {
            _arena.ReleaseOrZero(frames);
            throw;
        }
    }

    /// <summary>Maps pages onto Held frames (they become this VM's). Returns the frames the pages had
    /// before, now Held by the caller (who releases or reuses them); a poisoned page's frame is retired
    /// instead and not returned. All or nothing.</summary>
    public HostFrame[] Map(GuestPage first, ReadOnlySpan<HostFrame> frames)
    {
        CheckRange(first, (ulong)frames.Length);
        int rc = MapFrames(first, frames, 0, out HostFrame[] previous);
        if (rc == 0) return previous; // the failure message below is not built for every call
        if (rc == Lib.ESTATE)
            foreach (HostFrame f in frames)
                if (_arena.StateOf(f) != FrameState.Held) throw new FrameStateException(f, _arena.StateOf(f), "Held");
        FaultEngine.Check(rc, $"{Name}: mapping {new PageRun(first, (ulong)frames.Length)}");
        return previous;
    }

    /// <summary>Unbacks pages; their frames go back to the arena (punched, so the memory returns to the OS).</summary>
    public void Unback(GuestPage first, ulong count)
    {
        HostFrame[] old = Unmap(first, count);
        // The pages are unbacked; frames that cannot be punched still hold this VM's bytes: retired, never freed or left Held.
        _arena.ReleaseOrZero(old);
    }

    /// <summary>Unbacks pages and hands their frames to the caller, Held (content intact). Pages without a
    /// frame are left out; a poisoned page's frame is retired instead.</summary>
    public HostFrame[] Unmap(GuestPage first, ulong count)
    {
        CheckRange(first, count);
        var old = new uint[count];
        using (RegionUse use = Use())
        fixed (uint* o = old)
            FaultEngine.Check(Lib.Unmap(use.Id, first.Value, count, o), $"{Name}: unmapping {new PageRun(first, count)}");
        return FramesIn(old);
    }

    /// <summary>As <see cref="Unmap(GuestPage, ulong)"/>, writing the frames (in page order) into
    /// <paramref name="frames"/>, which must hold <paramref name="count"/>. Returns how many were written.</summary>
    public int Unmap(GuestPage first, ulong count, Span<HostFrame> frames)
    {
        if ((ulong)frames.Length < count)
            throw new ArgumentException($"room for {frames.Length} frames, {count} pages to unmap", nameof(frames));
        // The engine writes into its own buffer (a caller's span might lie in guest memory).
        HostFrame[] old = Unmap(first, count);
        old.CopyTo(frames);
        return old.Length;
    }

    /// <summary>Tops the demand pool up (to its capacity, or by at most <paramref name="maxFrames"/>)
    /// with zero frames. Returns how many were added.</summary>
    public int RefillPool(int maxFrames = int.MaxValue)
    {
        lock (_gate)
        {
            int room = Math.Min((int)PoolCapacity - PoolCount, maxFrames);
            int want = (int)Math.Min(room, _arena.Counts.Free);
            if (want <= 0) return 0;
            HostFrame[] frames;
            try { frames = _arena.Allocate((uint)want); }
            catch (ArenaExhaustedException) { return 0; } // a fault took the last free frames meanwhile
            int pushed;
            try
            {
                using RegionUse use = Use();
                fixed (HostFrame* p = frames)
                    pushed = Lib.PoolPush(use.Id, (uint*)p, (uint)frames.Length);
                FaultEngine.Check(pushed, $"{Name}: filling the demand pool");
            }
            catch
            {
                _arena.ReleaseOrZero(frames);
                throw;
            }
            if (pushed < frames.Length) _arena.ReleaseOrZero(frames.AsSpan(pushed));
            return pushed;
        }
    }

    /// <summary>Makes backed pages inaccessible until first touch (working-set sampling). Returns how many.</summary>
    public int Sample(ReadOnlySpan<GuestPage> pages)
    {
        foreach (GuestPage g in pages) CheckRange(g, 1);
        pages = OutsideGuestMemory(pages);
        using RegionUse use = Use();
        fixed (GuestPage* p = pages)
        {
            int rc = Lib.Sample(use.Id, (ulong*)p, (uint)pages.Length);
            FaultEngine.Check(rc, $"{Name}: sampling {pages.Length} pages");
            return rc;
        }
    }

    /// <summary>Ends a sampling period: what became of each sampled page (untouched ones are restored).
    /// Returns how many the guest touched.</summary>
    public int CollectSample(ReadOnlySpan<GuestPage> pages, Span<SampleResult> results)
    {
        if (results.Length < pages.Length)
            throw new ArgumentException($"results has {results.Length} slots for {pages.Length} pages", nameof(results));
        foreach (GuestPage g in pages) CheckRange(g, 1);
        using RegionUse use = Use();
        fixed (GuestPage* p = pages)
        fixed (SampleResult* t = results)
        {
            int rc = Lib.SampleCollect(use.Id, (ulong*)p, (uint)pages.Length, (byte*)t);
            FaultEngine.Check(rc, $"{Name}: collecting a sample");
            return rc;
        }
    }

    // Runs up to this long keep MapFrames' two buffers on the stack (2 KiB at most); longer ones rent them.
    private const int StackFrames = 256;

    // pl_map with the previous frames collected; returns the engine's status. The engine reads the frames
    // and writes the old ones under its locks, so both are buffers of this call, never caller memory (which
    // might be guest memory); the frames are checked for repeats in that same copy, the one the engine reads.
    private int MapFrames(GuestPage first, ReadOnlySpan<HostFrame> frames, uint flags, out HostFrame[] previous)
    {
        int n = frames.Length;
        uint[]? rented = null;
        Span<uint> buffer = n <= StackFrames ? stackalloc uint[2 * n] : (rented = ArrayPool<uint>.Shared.Rent(2 * n));
        try
        {
            Span<uint> mine = buffer[..n], old = buffer.Slice(n, n);
            MemoryMarshal.Cast<HostFrame, uint>(frames).CopyTo(mine);
            if (n > 1 && !StrictlyIncreasing(mine)) ThrowIfRepeated(mine);
            int rc;
            using (RegionUse use = Use())
            fixed (uint* f = mine)
            fixed (uint* o = old)
                rc = Lib.Map(use.Id, first.Value, (ulong)n, f, o, flags);
            previous = rc == 0 ? FramesIn(old) : [];
            return rc;
        }
        finally
        {
            if (rented is not null) ArrayPool<uint>.Shared.Return(rented);
        }
    }

    // Runs of frames (the usual case) cannot hold a repeat; only other orders need the sort.
    private static bool StrictlyIncreasing(ReadOnlySpan<uint> frames)
    {
        for (int i = 1; i < frames.Length; i++)
            if (frames[i] <= frames[i - 1]) return false;
        return true;
    }

    private static void ThrowIfRepeated(ReadOnlySpan<uint> frames)
    {
        uint[] sorted = frames.ToArray();
        Array.Sort(sorted);
        for (int i = 1; i < sorted.Length; i++)
            if (sorted[i] == sorted[i - 1])
                throw new ArgumentException($"{new HostFrame(sorted[i])} appears twice; a frame backs at most one page", "frames");
    }

    // The frames a p2m slice held, leaving out pages without one.
    private static HostFrame[] FramesIn(ReadOnlySpan<uint> p2m)
    {
        int absent = p2m.Count(Lib.NoFrame);
        if (absent == p2m.Length) return [];
        if (absent == 0) return MemoryMarshal.Cast<uint, HostFrame>(p2m).ToArray(); // a remap: one copy
        var frames = new HostFrame[p2m.Length - absent];
        int n = 0;
        foreach (uint f in p2m) if (f != Lib.NoFrame) frames[n++] = new HostFrame(f);
        return frames;
    }
}

/// <summary>What became of a sampled page by the end of its sampling period (values match pl_sample_collect).</summary>
public enum SampleResult : byte
{
    /// <summary>Still untouched: restored.</summary>
    Untouched = 0,
    /// <summary>The guest touched it.</summary>
    Touched = 1,
    /// <summary>The host unbacked, remapped or swapped it before any touch: not activity, left out of the fraction.</summary>
    Gone = 2,
}
