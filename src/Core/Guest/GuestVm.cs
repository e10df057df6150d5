// One VM's guest physical memory: a reserved address range whose page g is a view of host frame
// p2m[g]. Backing, unbacking, remapping, the demand-zero pool and the mapping count live here.
using PageLab.Core.Faults;
using PageLab.Core.Host;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Guest;

/// <summary>The state of a guest page as the fault engine sees it (values match pagelab_fault.c).</summary>
public enum GuestPageState : uint
{
    /// <summary>No frame; a touch takes a demand-zero fault.</summary>
    Unbacked = 0,
    Backed = 1,
    /// <summary>Backed but inaccessible until its first touch (working-set sampling).</summary>
    Sampled = 2,
    /// <summary>Backed read-only and protected (parity and/or a disk copy); a write takes a fault.</summary>
    Tracked = 3,
    /// <summary>Its frame holds an uncorrected error; inaccessible until recovered.</summary>
    Poisoned = 4,
}

public sealed unsafe partial class GuestVm : IDisposable
{
    private static int _nextId;

    private readonly HostArena _arena;
    private readonly int _region; // use Region, which refuses once disposed (slots are reused)
    private readonly uint* _state;
    private readonly uint* _p2m;
    private readonly Lock _gate = new();
    private int _disposed;

    private GuestVm(HostArena arena, string name, ulong pages, uint poolCapacity, int region, nint baseAddress)
    {
        _arena = arena;
        Name = name;
        PageCount = pages;
        PoolCapacity = poolCapacity;
        _region = region;
        Base = baseAddress;
        Id = Interlocked.Increment(ref _nextId);
        FaultEngine.Check(Lib.RegionTables(region, out _state, out _p2m), "pl_region_tables");
    }

    /// <summary>Reserves guest physical memory of <paramref name="pages"/> pages, all unbacked.</summary>
    /// <param name="poolCapacity">Frames the demand pool can hold for demand-zero faults.</param>
    public static GuestVm Create(HostArena arena, string name, ulong pages, uint poolCapacity = 256)
    {
        ArgumentNullException.ThrowIfNull(arena);
        if (pages == 0 || pages > 1UL << 32)
            throw new ArgumentOutOfRangeException(nameof(pages), pages, $"VM '{name}' needs between 1 and {1UL << 32} pages");
        if (poolCapacity == 0)
            throw new ArgumentOutOfRangeException(nameof(poolCapacity), poolCapacity, "the demand pool needs room for at least one frame");
        FaultEngine.EnsureInstalled();
        FaultEngine.Check(Lib.RegionCreate(arena.OsHandle, arena.HostView, arena.FrameCount, pages, poolCapacity, out int region, out nint b),
            $"reserving {pages} guest pages for VM '{name}'");
        arena.VmCreated();
        return new GuestVm(arena, name, pages, poolCapacity, region, b);
    }

    public int Id { get; }
    public string Name { get; }
    public ulong PageCount { get; }
    public uint PoolCapacity { get; }
    public HostArena Arena => _arena;

    /// <summary>Start of the guest physical memory range. Valid until <see cref="Dispose"/>.</summary>
    public nint Base { get; }

    public PageRun Pages => new(new GuestPage(0), PageCount);

    /// <summary>A guest page's bytes, as the guest sees them. Touching an unbacked page takes a real
    /// demand-zero fault. The span aliases the frame's host view and is valid until Dispose.</summary>
    public Span<byte> Page(GuestPage page)
    {
        CheckRange(page, 1);
        // SAFETY: page < PageCount, so the span lies in this VM's reservation, which lives until Dispose.
        return new Span<byte>((byte*)Base + (long)page.Value * _arena.PageSize, _arena.PageSize);
    }

    public GuestPageState StateOf(GuestPage page)
    {
        CheckRange(page, 1);
        // SAFETY: in range; the table lives as long as the region and is only written by libpagelab.
        return (GuestPageState)Volatile.Read(ref _state[page.Value]);
    }

    /// <summary>The frame backing a page, or null if unbacked.</summary>
    public HostFrame? Translate(GuestPage page)
    {
        CheckRange(page, 1);
        // SAFETY: as in StateOf.
        uint f = Volatile.Read(ref _p2m[page.Value]);
        return f == Lib.NoFrame ? null : new HostFrame(f);
    }

    /// <summary>The p2m map as maximal runs of pages on consecutive frames (unbacked pages left out).</summary>
    public List<(PageRun Pages, FrameRun Frames)> Mappings()
    {
        _ = Region; // refuse once disposed: the table is gone
        var result = new List<(PageRun, FrameRun)>();
        ulong g = 0;
        while (g < PageCount)
        {
            uint f = Volatile.Read(ref _p2m[g]);
            if (f == Lib.NoFrame) { g++; continue; }
            ulong n = 1;
            while (g + n < PageCount && n < uint.MaxValue && Volatile.Read(ref _p2m[g + n]) == f + n) n++;
            result.Add((new PageRun(new GuestPage(g), n), new FrameRun(new HostFrame(f), (uint)n)));
            g += n;
        }
        return result;
    }

    /// <summary>VMAs this VM's guest memory needs now (the engine's model of the kernel's merging).</summary>
    public long MappingCount
    {
        get
        {
            long n = Lib.RegionMaps(Region);
            if (n < 0) FaultEngine.Check((int)n, "pl_region_maps");
            return n;
        }
    }

    public FaultCounters Counters
    {
        get
        {
            ulong* c = stackalloc ulong[6];
            FaultEngine.Check(Lib.RegionCounters(Region, c, 6), "pl_region_counters");
            return new FaultCounters(c[0], c[1], c[2], c[3], c[4], c[5]);
        }
    }

    public int PoolCount
    {
        get
        {
            int n = Lib.PoolCount(Region);
            FaultEngine.Check(n, "pl_pool_count");
            return n;
        }
    }

    /// <summary>Backs unbacked pages with newly allocated zero frames (one contiguous run if the arena has one).</summary>
    public void Back(GuestPage first, ulong count)
    {
        lock (_gate)
        {
            CheckRange(first, count);
            for (ulong g = first.Value; g < first.Value + count; g++)
                if (Volatile.Read(ref _p2m[g]) != Lib.NoFrame)
                    throw new InvalidOperationException($"{Name}: {new GuestPage(g)} is already backed; unback it or remap it");
            HostFrame[] frames = _arena.Allocate(checked((uint)count));
            try { MapLocked(first, frames); }
            catch
            {
                _arena.Release(frames);
                throw;
            }
        }
    }

    /// <summary>Maps pages onto Held frames (they become this VM's). Returns the frames the pages had
    /// before, now Held by the caller (who releases or reuses them). All or nothing.</summary>
    public HostFrame[] Map(GuestPage first, ReadOnlySpan<HostFrame> frames)
    {
        lock (_gate)
        {
            CheckRange(first, (ulong)frames.Length);
            if (frames.Length > 1 && !StrictlyIncreasing(frames))
            {
                HostFrame[] sorted = frames.ToArray();
                Array.Sort(sorted);
                for (int i = 1; i < sorted.Length; i++)
                    if (sorted[i] == sorted[i - 1])
                        throw new ArgumentException($"{sorted[i]} appears twice; a frame backs at most one page", nameof(frames));
            }
            return MapLocked(first, frames);
        }
    }

    /// <summary>Unbacks pages; their frames go back to the arena (punched, so the memory returns to the OS).</summary>
    public void Unback(GuestPage first, ulong count)
    {
        HostFrame[] old = Unmap(first, count);
        _arena.Release(old);
    }

    /// <summary>Unbacks pages and hands their frames to the caller, Held (content intact).</summary>
    public HostFrame[] Unmap(GuestPage first, ulong count)
    {
        var frames = new HostFrame[count];
        int n = Unmap(first, count, frames);
        return n == frames.Length ? frames : frames[..n];
    }

    /// <summary>As <see cref="Unmap(GuestPage, ulong)"/>, writing the frames (in page order, unbacked
    /// pages left out) into <paramref name="frames"/>, which must hold <paramref name="count"/>.
    /// Returns how many were written.</summary>
    public int Unmap(GuestPage first, ulong count, Span<HostFrame> frames)
    {
        lock (_gate)
        {
            CheckRange(first, count);
            if ((ulong)frames.Length < count)
                throw new ArgumentException($"room for {frames.Length} frames, {count} pages to unmap", nameof(frames));
            Span<HostFrame> old = frames[..(int)count];
            fixed (HostFrame* o = old)
                FaultEngine.Check(Lib.Unmap(Region, first.Value, count, (uint*)o), $"{Name}: unmapping {new PageRun(first, count)}");
            int n = 0;
            foreach (HostFrame f in old) if (f.Value != Lib.NoFrame) old[n++] = f;
            _arena.Transition(old[..n], FrameState.Guest, Id, FrameState.Held, 0);
            return n;
        }
    }

    /// <summary>Tops the demand pool up (to its capacity, or by at most <paramref name="maxFrames"/>)
    /// with zero frames. Returns how many were added.</summary>
    public int RefillPool(int maxFrames = int.MaxValue)
    {
        lock (_gate)
        {
            int room = Math.Min((int)PoolCapacity - PoolCount, maxFrames);
            long free = _arena.Counts.Free;
            int want = (int)Math.Min(room, free);
            if (want <= 0) return 0;
            HostFrame[] frames = _arena.Allocate((uint)want);
            _arena.Transition(frames, FrameState.Held, null, FrameState.Guest, Id);
            int pushed;
            fixed (HostFrame* p = frames)
                pushed = Lib.PoolPush(Region, (uint*)p, (uint)frames.Length);
            FaultEngine.Check(pushed, $"{Name}: filling the demand pool");
            if (pushed < frames.Length)
            {
                HostFrame[] rest = frames[pushed..];
                _arena.Transition(rest, FrameState.Guest, Id, FrameState.Held, 0);
                _arena.Release(rest);
            }
            return pushed;
        }
    }

    /// <summary>Makes backed pages inaccessible until first touch (working-set sampling). Returns how many.</summary>
    public int Sample(ReadOnlySpan<GuestPage> pages)
    {
        foreach (GuestPage g in pages) CheckRange(g, 1);
        fixed (GuestPage* p = pages)
        {
            int rc = Lib.Sample(Region, (ulong*)p, (uint)pages.Length);
            FaultEngine.Check(rc, $"{Name}: sampling {pages.Length} pages");
            return rc;
        }
    }

    /// <summary>Ends a sampling period: which sampled pages were touched. Untouched ones are restored.</summary>
    public int CollectSample(ReadOnlySpan<GuestPage> pages, Span<bool> touched)
    {
        if (touched.Length < pages.Length)
            throw new ArgumentException($"touched has {touched.Length} slots for {pages.Length} pages", nameof(touched));
        foreach (GuestPage g in pages) CheckRange(g, 1);
        fixed (GuestPage* p = pages)
        fixed (bool* t = touched)
        {
            int rc = Lib.SampleCollect(Region, (ulong*)p, (uint)pages.Length, (byte*)t);
            FaultEngine.Check(rc, $"{Name}: collecting a sample");
            return rc;
        }
    }

    /// <summary>Frames this VM holds: mapped pages plus its demand pool.</summary>
    public long HeldFrames
    {
        get
        {
            _ = Region; // refuse once disposed
            return _arena.OwnedBy(Id);
        }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        lock (_gate)
        {
            var frames = new List<HostFrame>();
            for (ulong g = 0; g < PageCount; g++)
                if (_p2m[g] is var f && f != Lib.NoFrame) frames.Add(new HostFrame(f));
            var pooled = new uint[PoolCapacity];
            int n;
            fixed (uint* p = pooled) n = Lib.PoolTake(_region, p, PoolCapacity);
            frames.AddRange(pooled.Take(Math.Max(0, n)).Select(f => new HostFrame(f)));
            FaultEngine.Check(Lib.RegionDestroy(_region), $"{Name}: destroying the region");
            _arena.Transition(frames.ToArray(), FrameState.Guest, Id, FrameState.Held, 0);
            _arena.Release(frames.ToArray());
            _arena.VmDisposed();
        }
    }

    private HostFrame[] MapLocked(GuestPage first, ReadOnlySpan<HostFrame> frames)
    {
        _arena.Transition(frames, FrameState.Held, null, FrameState.Guest, Id);
        Span<uint> old = frames.Length <= 256 ? stackalloc uint[frames.Length] : new uint[frames.Length];
        int rc;
        fixed (HostFrame* f = frames)
        fixed (uint* o = old)
            rc = Lib.Map(Region, first.Value, (ulong)frames.Length, (uint*)f, o);
        if (rc != 0)
        {
            _arena.Transition(frames, FrameState.Guest, Id, FrameState.Held, 0);
            FaultEngine.Check(rc, $"{Name}: mapping {new PageRun(first, (ulong)frames.Length)}");
        }
        HostFrame[] previous = FramesIn(old);
        _arena.Transition(previous, FrameState.Guest, Id, FrameState.Held, 0);
        return previous;
    }

    // Runs of frames (the usual case) cannot hold a duplicate; only other orders need the sort.
    private static bool StrictlyIncreasing(ReadOnlySpan<HostFrame> frames)
    {
        for (int i = 1; i < frames.Length; i++)
            if (frames[i].Value <= frames[i - 1].Value) return false;
        return true;
    }

    // The frames a p2m slice held, leaving out unbacked pages.
    private static HostFrame[] FramesIn(ReadOnlySpan<uint> p2m)
    {
        int n = 0;
        foreach (uint f in p2m) if (f != Lib.NoFrame) n++;
        if (n == 0) return [];
        var frames = new HostFrame[n];
        n = 0;
        foreach (uint f in p2m) if (f != Lib.NoFrame) frames[n++] = new HostFrame(f);
        return frames;
    }

    private int Region
    {
        get
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            return _region;
        }
    }

    private void CheckRange(GuestPage first, ulong count)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        if (count == 0) throw new ArgumentOutOfRangeException(nameof(count), count, $"{Name}: a page range is never empty");
        if (first.Value >= PageCount || count > PageCount - first.Value)
            throw new ArgumentOutOfRangeException(nameof(first), first,
                $"{Name}: pages {first.Value}..{first.Value + count - 1} pass the VM's last page {PageCount - 1}");
    }
}
