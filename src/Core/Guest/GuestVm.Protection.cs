// GuestVm's hooks into the fault engine's protection: parity groups, read-only protection with a
// recorded hash, error injection, recovery, scrubbing. Policy lives in Core/Recovery; this is the mechanism.
using PageLab.Core.Faults;
using PageLab.Core.Host;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Guest;

internal enum RecoverResult { Recovered, NoGoodCopy, AlreadyReplaced }

public sealed unsafe partial class GuestVm
{
    /// <summary>The file descriptor disk offsets given to <see cref="Protect"/> refer to.</summary>
    internal void SetDiskFile(int fd) => FaultEngine.Check(Lib.SetDiskFd(Region, fd), $"{Name}: setting the disk file");

    /// <summary>Makes the pages one parity group over a Parity frame. Returns the group index.</summary>
    internal int CreateParityGroup(ReadOnlySpan<GuestPage> pages, HostFrame parityFrame)
    {
        foreach (GuestPage g in pages) CheckRange(g, 1);
        fixed (GuestPage* p = pages)
        {
            int rc = Lib.GroupCreate(Region, (ulong*)p, (uint)pages.Length, parityFrame.Value);
            FaultEngine.Check(rc, $"{Name}: parity group of {pages.Length} pages over {parityFrame}");
            return rc;
        }
    }

    /// <summary>Makes backed pages read-only and protected (TRACKED). Returns how many.</summary>
    internal int Protect(ReadOnlySpan<GuestPage> pages, ReadOnlySpan<long> diskOffsets)
    {
        if (!diskOffsets.IsEmpty && diskOffsets.Length != pages.Length)
            throw new ArgumentException($"{diskOffsets.Length} disk offsets for {pages.Length} pages", nameof(diskOffsets));
        foreach (GuestPage g in pages) CheckRange(g, 1);
        fixed (GuestPage* p = pages)
        fixed (long* d = diskOffsets)
        {
            int rc = Lib.Protect(Region, (ulong*)p, (uint)pages.Length, diskOffsets.IsEmpty ? null : d);
            FaultEngine.Check(rc, $"{Name}: protecting {pages.Length} pages");
            return rc;
        }
    }

    /// <summary>XORs <paramref name="mask"/> into the page's frame at <paramref name="offset"/> and poisons
    /// the page. With <paramref name="onlyIfProtected"/>, returns null (and changes nothing) unless the
    /// page is protected at that instant.
    /// Returns the frame that was corrupted (the one to report), or null.</summary>
    internal HostFrame? Inject(GuestPage page, int offset, ReadOnlySpan<byte> mask, bool onlyIfProtected)
    {
        CheckRange(page, 1);
        fixed (byte* m = mask)
        {
            int rc = Lib.Inject(Region, page.Value, checked((uint)offset), m, (uint)mask.Length, onlyIfProtected ? 1 : 0, out uint hit);
            if (rc == Lib.ESTATE) return null;
            FaultEngine.Check(rc, $"{Name}: injecting {mask.Length} bytes at offset {offset} of {page}");
            return new HostFrame(hit);
        }
    }

    /// <summary>Recovers a poisoned or corrupt protected page, backed by <paramref name="bad"/>, into
    /// <paramref name="fresh"/> (a Held frame, which becomes this VM's). The bad frame becomes Held.</summary>
    internal RecoverResult Recover(GuestPage page, HostFrame bad, HostFrame fresh)
    {
        CheckRange(page, 1);
        lock (_gate)
        {
            _arena.Transition([fresh], FrameState.Held, null, FrameState.Guest, Id);
            int rc = Lib.Recover(Region, page.Value, bad.Value, fresh.Value, out uint old);
            if (rc != 0)
            {
                _arena.Transition([fresh], FrameState.Guest, Id, FrameState.Held, 0);
                if (rc == Lib.ELOST) return RecoverResult.NoGoodCopy;
                if (rc == Lib.ESTATE) return RecoverResult.AlreadyReplaced;
                FaultEngine.Check(rc, $"{Name}: recovering {page}");
            }
            _arena.Transition([new HostFrame(old)], FrameState.Guest, Id, FrameState.Held, 0);
            return RecoverResult.Recovered;
        }
    }

    /// <summary>Rebuilds a group's parity into <paramref name="fresh"/> (a Parity frame). Returns the old parity frame.</summary>
    internal HostFrame RebuildParity(int group, HostFrame fresh)
    {
        FaultEngine.Check(Lib.ParityRebuild(Region, checked((uint)group), fresh.Value, out uint old), $"{Name}: rebuilding parity of group {group}");
        return new HostFrame(old);
    }

    /// <summary>Protected pages whose content no longer matches its hash (silent corruption).</summary>
    internal List<GuestPage> ScrubPages(GuestPage first, ulong count)
    {
        CheckRange(first, count);
        var bad = new ulong[Math.Min(count, 4096)];
        fixed (ulong* b = bad)
        {
            int n = Lib.Scrub(Region, first.Value, count, b, (uint)bad.Length);
            FaultEngine.Check(n, $"{Name}: scrubbing");
            return bad.Take(n).Select(g => new GuestPage(g)).ToList();
        }
    }

    /// <summary>Parity groups whose parity frame no longer matches their covered members.</summary>
    internal List<int> ScrubParity()
    {
        var bad = new uint[1024];
        fixed (uint* b = bad)
        {
            int n = Lib.ScrubParity(Region, b, (uint)bad.Length);
            FaultEngine.Check(n, $"{Name}: scrubbing parity");
            return bad.Take(n).Select(g => (int)g).ToList();
        }
    }

    internal int? GroupOf(GuestPage page)
    {
        CheckRange(page, 1);
        int g = Lib.GroupOf(Region, page.Value);
        FaultEngine.Check(g < -1 ? g : 0, $"{Name}: group of {page}");
        return g < 0 ? null : g;
    }

    /// <summary>Bad frames the handler replaced while recovering on a guest access; now Held.</summary>
    internal HostFrame[] TakeHandlerRetired()
    {
        var frames = new uint[PoolCapacity];
        int n;
        fixed (uint* f = frames) n = Lib.RetiredTake(Region, f, PoolCapacity);
        FaultEngine.Check(n, $"{Name}: taking retired frames");
        HostFrame[] result = frames.Take(n).Select(f => new HostFrame(f)).ToArray();
        _arena.Transition(result, FrameState.Guest, Id, FrameState.Held, 0);
        return result;
    }

    /// <summary>The engine's content hash (the same function the native side records).</summary>
    public static ulong Hash(ReadOnlySpan<byte> page)
    {
        fixed (byte* p = page) return Lib.PageHash(p, (ulong)page.Length);
    }
}
