// GuestVm's hooks into the fault engine's protection: parity groups, read-only protection with a
// recorded hash, error injection, recovery, scrubbing, and what the handler did on guest accesses.
// Policy lives in Core/Recovery; this is the mechanism.
using Microsoft.Win32.SafeHandles;
using PageLab.Core.Faults;
using PageLab.Core.Host;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Guest;

internal enum RecoverResult { Recovered, NoGoodCopy, AlreadyReplaced }

/// <summary>What the fault handler did on a guest access to a poisoned or corrupt page: recovered it
/// (bit-exact) or contained it (the page reads as zero; its guest context must end). The bad frame is
/// retired either way. <paramref name="Reported"/>: nothing was done yet; the kernel reported the page bad
/// (BUS_MCEERR_AO), the handler made it Poisoned, and <paramref name="BadFrame"/> is to be handled as a
/// report. <paramref name="SharedFrame"/>: the page was one of several sharers of the bad frame (an error
/// reported in a shared frame), so each sharer has an event of its own. <paramref name="MapLimit"/>: no
/// error at all; the mapping budget was spent and nothing could be host-swapped, so the handler gave this
/// page up to resolve another fault (unbacked, flagged lost, its frame freed: <paramref name="BadFrame"/> is
/// not a frame); its guest context ends as for a contained page.</summary>
public readonly record struct HandlerEvent(GuestPage Page, HostFrame BadFrame, bool Contained, bool Reported = false, bool SharedFrame = false,
    bool MapLimit = false);

public sealed unsafe partial class GuestVm
{
    /// <summary>The file disk offsets given to <see cref="Protect"/> refer to. It stays open (the VM keeps
    /// a reference) for as long as the engine may read it.</summary>
    internal void SetDiskFile(SafeFileHandle file)
    {
        using RegionUse use = Use();
        _region.KeepOpen(file);
        FaultEngine.Check(Lib.SetDiskFd(use.Id, file.DangerousGetHandle()), $"{Name}: setting the disk file");
    }

    /// <summary>Makes the pages one parity group over a Parity frame. Returns the group index.</summary>
    internal int CreateParityGroup(ReadOnlySpan<GuestPage> pages, HostFrame parityFrame)
    {
        foreach (GuestPage g in pages) CheckRange(g, 1);
        pages = OutsideGuestMemory(pages);
        using RegionUse use = Use();
        fixed (GuestPage* p = pages)
        {
            int rc = Lib.GroupCreate(use.Id, (ulong*)p, (uint)pages.Length, parityFrame.Value);
            FaultEngine.Check(rc, $"{Name}: parity group of {pages.Length} pages over {parityFrame}");
            return rc;
        }
    }

    /// <summary>Dissolves a parity group; returns its parity frame (still Parity) for the caller to free.</summary>
    internal HostFrame FreeParityGroup(int group)
    {
        using RegionUse use = Use();
        FaultEngine.Check(Lib.GroupFree(use.Id, checked((uint)group), out uint parity), $"{Name}: freeing parity group {group}");
        return new HostFrame(parity);
    }

    /// <summary>Makes backed pages read-only and protected (TRACKED). Returns how many.</summary>
    internal int Protect(ReadOnlySpan<GuestPage> pages, ReadOnlySpan<long> diskOffsets)
    {
        if (!diskOffsets.IsEmpty && diskOffsets.Length != pages.Length)
            throw new ArgumentException($"{diskOffsets.Length} disk offsets for {pages.Length} pages", nameof(diskOffsets));
        foreach (GuestPage g in pages) CheckRange(g, 1);
        pages = OutsideGuestMemory(pages);
        diskOffsets = OutsideGuestMemory(diskOffsets);
        using RegionUse use = Use();
        fixed (GuestPage* p = pages)
        fixed (long* d = diskOffsets)
        {
            int rc = Lib.Protect(use.Id, (ulong*)p, (uint)pages.Length, diskOffsets.IsEmpty ? null : d);
            FaultEngine.Check(rc, $"{Name}: protecting {pages.Length} pages");
            return rc;
        }
    }

    /// <summary>XORs <paramref name="mask"/> into the page's frame at <paramref name="offset"/> and poisons
    /// the page. Returns the frame that was corrupted (the one to report), or null (nothing changed) if the
    /// page has no frame, or, with <paramref name="onlyIfProtected"/>, is not protected at that instant.</summary>
    internal HostFrame? Inject(GuestPage page, int offset, ReadOnlySpan<byte> mask, bool onlyIfProtected)
    {
        CheckRange(page, 1);
        mask = OutsideGuestMemory(mask);
        using RegionUse use = Use();
        fixed (byte* m = mask)
        {
            int rc = Lib.Inject(use.Id, page.Value, checked((uint)offset), m, (uint)mask.Length, onlyIfProtected ? 1 : 0, out uint hit);
            if (rc == Lib.ESTATE) return null;
            FaultEngine.Check(rc, $"{Name}: injecting {mask.Length} bytes at offset {offset} of {page}");
            return new HostFrame(hit);
        }
    }

    /// <summary>Recovers a poisoned or corrupt protected page, backed by <paramref name="bad"/>, into
    /// <paramref name="fresh"/> (a Held frame, which becomes this VM's; null: the engine finds one as its
    /// fault handler would, host-swapping a page if it must). The engine retires the bad frame. On any
    /// other result <paramref name="fresh"/> stays Held.</summary>
    internal RecoverResult Recover(GuestPage page, HostFrame bad, HostFrame? fresh)
    {
        CheckRange(page, 1);
        using RegionUse use = Use();
        int rc = Lib.Recover(use.Id, page.Value, bad.Value, fresh?.Value ?? Lib.NoFrame, out _);
        if (rc == Lib.ELOST) return RecoverResult.NoGoodCopy;
        if (rc == Lib.ESTATE) return RecoverResult.AlreadyReplaced;
        FaultEngine.Check(rc, $"{Name}: recovering {page}");
        return RecoverResult.Recovered;
    }

    /// <summary>Rebuilds a group's parity into <paramref name="fresh"/> (a Parity frame). Returns the old
    /// parity frame, or null while a covered member is poisoned or corrupt (recover it first).</summary>
    internal HostFrame? RebuildParity(int group, HostFrame fresh)
    {
        using RegionUse use = Use();
        int rc = Lib.ParityRebuild(use.Id, checked((uint)group), fresh.Value, out uint old);
        if (rc == Lib.ESTATE) return null;
        FaultEngine.Check(rc, $"{Name}: rebuilding parity of group {group}");
        return new HostFrame(old);
    }

    /// <summary>Poisoned pages and protected pages whose content no longer matches its hash (silent corruption).</summary>
    internal List<GuestPage> ScrubPages(GuestPage first, ulong count)
    {
        CheckRange(first, count);
        var bad = new ulong[Math.Min(count, 4096)];
        using RegionUse use = Use();
        fixed (ulong* b = bad)
        {
            int n = Lib.Scrub(use.Id, first.Value, count, b, (uint)bad.Length);
            FaultEngine.Check(n, $"{Name}: scrubbing");
            return bad.Take(n).Select(g => new GuestPage(g)).ToList();
        }
    }

    /// <summary>Parity groups whose parity frame no longer matches their covered members (groups with a
    /// poisoned or corrupt member are left for after that member's recovery).</summary>
    internal List<int> ScrubParity()
    {
        var bad = new uint[1024];
        using RegionUse use = Use();
        fixed (uint* b = bad)
        {
            int n = Lib.ScrubParity(use.Id, b, (uint)bad.Length);
            FaultEngine.Check(n, $"{Name}: scrubbing parity");
            return bad.Take(n).Select(g => (int)g).ToList();
        }
    }

    internal int? GroupOf(GuestPage page)
    {
        CheckRange(page, 1);
        using RegionUse use = Use();
        int g = Lib.GroupOf(use.Id, page.Value);
        FaultEngine.Check(g < -1 ? g : 0, $"{Name}: group of {page}");
        return g < 0 ? null : g;
    }

    /// <summary>What the handler recovered or contained on guest accesses since the last call, oldest first.</summary>
    public List<HandlerEvent> TakeHandlerEvents()
    {
        var result = new List<HandlerEvent>();
        var events = new Lib.Event[64];
        using RegionUse use = Use();
        // Kernel reports (BUS_MCEERR_AO) that arrived while the region lock was taken become events now.
        FaultEngine.Check(Lib.KernelErrorsDrain(use.Id), $"{Name}: deferred memory error reports");
        while (true)
        {
            int n;
            fixed (Lib.Event* e = events) n = Lib.EventsTake(use.Id, e, (uint)events.Length);
            FaultEngine.Check(n, $"{Name}: taking handler events");
            for (int i = 0; i < n; i++)
                result.Add(new HandlerEvent(new GuestPage(events[i].Page), new HostFrame(events[i].Frame),
                    events[i].Kind is Lib.EventContained or Lib.EventSharedLost or Lib.EventMapLimit, events[i].Kind == Lib.EventReported,
                    events[i].Kind == Lib.EventSharedLost, events[i].Kind == Lib.EventMapLimit));
            if (n < events.Length) return result;
        }
    }

    /// <summary>Retires <paramref name="frame"/> if it waits in the demand pool (an error in a frame no page
    /// maps yet); the other pool frames go back. Returns false if it is not in the pool.</summary>
    internal bool RetireFromPool(HostFrame frame)
    {
        lock (_gate)
        {
            var pooled = new uint[PoolCapacity];
            int n;
            using (RegionUse use = Use())
            fixed (uint* p = pooled)
                n = Lib.PoolTake(use.Id, p, PoolCapacity);
            FaultEngine.Check(n, $"{Name}: emptying the demand pool");
            HostFrame[] taken = pooled.Take(n).Select(f => new HostFrame(f)).ToArray();
            bool found = taken.Contains(frame);
            if (found) _arena.Retire(frame);
            HostFrame[] rest = taken.Where(f => f != frame).ToArray();
            if (rest.Length > 0) _arena.ReleaseOrZero(rest); // punched: RefillPool gives zero frames again
            return found;
        }
    }

    /// <summary>The engine's content hash (the same function the native side records).</summary>
    public static ulong Hash(ReadOnlySpan<byte> page)
    {
        fixed (byte* p = page) return Lib.PageHash(p, (ulong)page.Length);
    }
}
