// One VM's guest physical memory: a reserved address range whose page g is a view of host frame
// p2m[g]. Backing, unbacking, remapping, the demand-zero pool, host swap and the mapping count live here.
// Every call holds a use of the region (RegionUse), so a concurrent Dispose waits for it or makes it
// throw ObjectDisposedException: never a crash, never another VM's page.
using System.Buffers;
using System.Numerics;
using System.Runtime.InteropServices;
using PageLab.Core.Faults;
using PageLab.Core.Host;
using PageLab.Native;
using Microsoft.Win32.SafeHandles;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Guest;

/// <summary>The state of a guest page as the fault engine sees it (values match pagelab.h).</summary>
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
    /// <summary>Host-swapped: no frame; the content is in the VM's host swap file until the next touch.</summary>
    Swapped = 5,
    /// <summary>Mapped read-only onto a shared frame (content-based sharing); a write takes a copy-on-write fault.</summary>
    Shared = 6,
}

public sealed unsafe partial class GuestVm : IDisposable
{
    private static int _nextId;

    private readonly HostArena _arena;
    private readonly RegionHandle _region;
    private readonly uint* _state;   // engine tables: valid while a RegionUse is held
    private readonly uint* _p2m;
    private readonly Lock _gate = new();

    private GuestVm(HostArena arena, string name, ulong pages, uint poolCapacity, int id, RegionHandle region, nint baseAddress)
    {
        _arena = arena;
        Name = name;
        PageCount = pages;
        PoolCapacity = poolCapacity;
        _region = region;
        Base = baseAddress;
        Id = id;
        FaultEngine.Check(Lib.RegionTables(region.Id, out _state, out _p2m), "pl_region_tables");
    }

    /// <summary>Reserves guest physical memory of <paramref name="pages"/> pages, all unbacked.</summary>
    /// <param name="poolCapacity">Frames the demand pool can hold for demand-zero faults.</param>
    /// <param name="hostSwap">Give the VM a host swap file (deleted at once, so it never outlives the
    /// process): with no frame to give, the fault handler swaps one of the VM's pages out instead of failing.</param>
    public static GuestVm Create(HostArena arena, string name, ulong pages, uint poolCapacity = 256, bool hostSwap = true)
    {
        ArgumentNullException.ThrowIfNull(arena);
        if (pages == 0 || pages > 1UL << 32)
            throw new ArgumentOutOfRangeException(nameof(pages), pages, $"VM '{name}' needs between 1 and {1UL << 32} pages");
        if (poolCapacity == 0)
            throw new ArgumentOutOfRangeException(nameof(poolCapacity), poolCapacity, "the demand pool needs room for at least one frame");
        FaultEngine.EnsureInstalled();
        int id = Interlocked.Increment(ref _nextId);
        // A reference on the arena for the region's whole life (RegionHandle takes it over): the arena's
        // tables, host view and memfd outlive the region even if the arena is disposed meanwhile.
        ArenaHandle arenaHandle = arena.TakeReference();
        RegionHandle handle;
        nint b;
        try
        {
            FaultEngine.Check(Lib.RegionCreate(arenaHandle.DangerousGetHandle(), id, pages, poolCapacity, out int region, out b),
                $"reserving {pages} guest pages for VM '{name}'");
            handle = new RegionHandle(region, arenaHandle);
        }
        catch
        {
            arenaHandle.DangerousRelease();
            throw;
        }
        try
        {
            var vm = new GuestVm(arena, name, pages, poolCapacity, id, handle, b);
            if (hostSwap) vm.UseHostSwapFile(HostSwapFile.Open(name));
            return vm;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public int Id { get; }
    public string Name { get; }
    public ulong PageCount { get; }
    public uint PoolCapacity { get; }
    public HostArena Arena => _arena;
    public bool IsDisposed => _region.IsClosed;

    /// <summary>Start of the guest physical memory range. Valid until <see cref="Dispose"/>; afterwards the
    /// range stays reserved and inaccessible for the process's life (no other VM is ever placed there), so
    /// a stale pointer or span into it faults rather than reach another VM's page.</summary>
    public nint Base { get; }

    public PageRun Pages => new(new GuestPage(0), PageCount);

    /// <summary>A guest page's bytes, as the guest sees them. Touching an unbacked page takes a real
    /// demand-zero fault. The span aliases the frame's host view and is valid until Dispose; used after it
    /// (or after the VM was finalized: keep the VM reachable while its spans are used) the span faults,
    /// an access violation the process does not survive, and never reaches another VM's page.</summary>
    public Span<byte> Page(GuestPage page)
    {
        CheckRange(page, 1);
        // SAFETY: page < PageCount, so the span lies in this VM's reservation, which lives until Dispose.
        return new Span<byte>((byte*)Base + (long)page.Value * _arena.PageSize, _arena.PageSize);
    }

    public GuestPageState StateOf(GuestPage page)
    {
        CheckRange(page, 1);
        using RegionUse use = Use();
        // SAFETY: in range, and the table lives while `use` is held; only libpagelab writes it.
        return (GuestPageState)Volatile.Read(ref _state[page.Value]);
    }

    /// <summary>How many of <paramref name="pages"/> are in <paramref name="state"/>: one use of the region
    /// for all of them (a <see cref="StateOf"/> per page costs a handle reference each).</summary>
    public ulong CountInState(IEnumerable<ulong> pages, GuestPageState state)
    {
        using RegionUse use = Use();
        ulong n = 0;
        foreach (ulong g in pages)
        {
            CheckRange(new GuestPage(g), 1);
            // SAFETY: as in StateOf.
            if ((GuestPageState)Volatile.Read(ref _state[g]) == state) n++;
        }
        return n;
    }

    /// <summary>The frame backing a page, or null if it has none (unbacked or host-swapped).</summary>
    public HostFrame? Translate(GuestPage page)
    {
        CheckRange(page, 1);
        using RegionUse use = Use();
        // SAFETY: as in StateOf.
        uint f = Volatile.Read(ref _p2m[page.Value]);
        return f == Lib.NoFrame ? null : new HostFrame(f);
    }

    /// <summary>True if the page's content was lost to an uncorrected error (contained: it reads as zero
    /// since, and the guest context that used it is to be ended).</summary>
    public bool IsLost(GuestPage page)
    {
        CheckRange(page, 1);
        using RegionUse use = Use();
        int flags = Lib.PageFlags(use.Id, page.Value);
        FaultEngine.Check(flags, $"{Name}: flags of {page}");
        return (flags & Lib.PageFlagLost) != 0;
    }

    /// <summary>The p2m map as maximal runs of pages on consecutive frames (pages without a frame left out).</summary>
    public List<(PageRun Pages, FrameRun Frames)> Mappings()
    {
        using RegionUse use = Use();
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
            using RegionUse use = Use();
            long n = Lib.RegionMaps(use.Id);
            if (n < 0) FaultEngine.Check((int)n, "pl_region_maps");
            return n;
        }
    }

    public FaultCounters Counters
    {
        get
        {
            using RegionUse use = Use();
            Lib.RegionCounters c;
            FaultEngine.Check(Lib.RegionCountersGet(use.Id, (ulong*)&c, Lib.RegionCounters.Count), "pl_region_counters");
            return FaultCounters.From(c);
        }
    }

    public int PoolCount
    {
        get
        {
            using RegionUse use = Use();
            int n = Lib.PoolCount(use.Id);
            FaultEngine.Check(n, "pl_pool_count");
            return n;
        }
    }

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

    /// <summary>Frames this VM holds: mapped pages plus its demand pool.</summary>
    public long HeldFrames
    {
        get
        {
            using RegionUse use = Use(); // refuse once disposed
            long n = Lib.RegionOwned(use.Id);
            FaultEngine.Check(n < int.MinValue ? int.MinValue : (int)Math.Min(n, 0), $"{Name}: counting its frames");
            return n;
        }
    }

    /// <summary>Destroys the region once no call is using it: its guest memory is quarantined (inaccessible,
    /// never reused) and every frame goes back to the arena (a poisoned one is retired). Safe to call from
    /// any thread, any number of times.</summary>
    public void Dispose() => _region.Dispose();

    internal void UseHostSwapFile(SafeFileHandle file)
    {
        using RegionUse use = Use();
        _region.KeepOpen(file);
        FaultEngine.Check(Lib.SetHostSwap(use.Id, file.DangerousGetHandle()), $"{Name}: setting the host swap file");
        file.Dispose(); // the region's reference keeps it open until the region is gone
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

    // A buffer the engine reads while it holds this VM's region lock must not lie in this VM's guest
    // memory: touching it there would fault, and the fault would wait on that same lock. Such a buffer
    // (an odd but legal argument) is copied first.
    internal ReadOnlySpan<T> OutsideGuestMemory<T>(ReadOnlySpan<T> span) where T : unmanaged
    {
        fixed (T* p = span)
        {
            long start = (long)p, end = start + (long)span.Length * sizeof(T);
            long guestStart = Base, guestEnd = guestStart + (long)PageCount * _arena.PageSize;
            return start < guestEnd && end > guestStart ? span.ToArray() : span;
        }
    }

    internal RegionUse Use()
    {
        try { return new RegionUse(_region); }
        catch (ObjectDisposedException) { throw new ObjectDisposedException(nameof(GuestVm), $"VM '{Name}' has been disposed"); }
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

    private void CheckRange(GuestPage first, ulong count)
    {
        ObjectDisposedException.ThrowIf(_region.IsClosed, this);
        if (count == 0) throw new ArgumentOutOfRangeException(nameof(count), count, $"{Name}: a page range is never empty");
        if (first.Value >= PageCount || count > PageCount - first.Value)
            throw new ArgumentOutOfRangeException(nameof(first), first,
                $"{Name}: pages {first.Value}..{first.Value + count - 1} pass the VM's last page {PageCount - 1}");
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
