// Content-based page sharing for one VM (the engine side is src/Native/c/share.c): opting in, making a
// page's frame a shared frame, merging a page onto one after a byte-by-byte compare, and unsharing.
// A write to a shared page is a copy-on-write fault resolved inside the native handler.
using PageLab.Core.Faults;
using PageLab.Core.Host;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Guest;

/// <summary>What an attempt to merge a page onto a shared frame did.</summary>
public enum ShareResult
{
    /// <summary>The bytes were equal: the page now maps the shared frame read-only; its own frame was freed.</summary>
    Merged,
    /// <summary>The bytes differ (the page was written since it was hashed, or the hash collided): unchanged.</summary>
    Differs,
    /// <summary>The page is not shareable (not Backed, protected, lost or being sampled) or the frame is
    /// not a live shared frame any more: unchanged.</summary>
    NotEligible,
}

public sealed partial class GuestVm
{
    /// <summary>True once <see cref="EnableSharing"/> opted this VM in. Sharing is off by default: the
    /// time a copy-on-write fault takes tells a tenant that another VM holds the same content (docs/sharing.md).</summary>
    public bool SharingEnabled { get; private set; }

    /// <summary>Opts this VM in to (or out of) content-based sharing. Opting out stops new merges; pages
    /// already shared stay shared until written or unmapped.</summary>
    public void EnableSharing(bool on = true)
    {
        using RegionUse use = Use();
        FaultEngine.Check(Lib.SetSharing(use.Id, on ? 1 : 0), $"{Name}: {(on ? "enabling" : "disabling")} page sharing");
        SharingEnabled = on;
    }

    /// <summary>Makes a Backed page's own frame a shared frame (one sharer: this page, now read-only).
    /// Null if the page is not shareable.</summary>
    public HostFrame? ShareCreate(GuestPage page)
    {
        CheckRange(page, 1);
        using RegionUse use = Use();
        int rc = Lib.ShareCreate(use.Id, page.Value, out uint frame);
        if (rc == Lib.ESTATE) return null;
        FaultEngine.Check(rc, $"{Name}: sharing {page}");
        return new HostFrame(frame);
    }

    /// <summary>Merges a Backed page onto a shared frame if their bytes are equal (compared by the engine
    /// under this VM's lock, with the page read-only); its own frame is punched and freed.</summary>
    public ShareResult TryShare(GuestPage page, HostFrame shared)
    {
        CheckRange(page, 1);
        using RegionUse use = Use();
        int rc = Lib.SharePage(use.Id, page.Value, shared.Value);
        if (rc == Lib.ESTATE) return ShareResult.NotEligible;
        FaultEngine.Check(rc, $"{Name}: merging {page} onto shared {shared}");
        return rc == 1 ? ShareResult.Merged : ShareResult.Differs;
    }

    /// <summary>Gives the shared pages among a run private, writable copies now (as a write would).
    /// Returns how many were shared.</summary>
    public int Unshare(GuestPage first, ulong count)
    {
        CheckRange(first, count);
        using RegionUse use = Use();
        int rc = Lib.Unshare(use.Id, first.Value, count);
        FaultEngine.Check(rc, $"{Name}: unsharing {new PageRun(first, count)}");
        return rc;
    }

    /// <summary>Pages of this VM now mapping a shared frame.</summary>
    public long SharedPages
    {
        get
        {
            using RegionUse use = Use();
            long n = Lib.RegionShared(use.Id);
            if (n < 0) FaultEngine.Check((int)n, "pl_region_shared");
            return n;
        }
    }
}
