// What a VM's guest memory holds now, read without changing it: page bytes and states, the p2m map,
// the mapping count, the engine's counters and the frames held (each read holds a use of the region).
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
}
