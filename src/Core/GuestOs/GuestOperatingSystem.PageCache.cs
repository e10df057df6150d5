// The guest OS's side of its page cache: the cache itself (made on first use, over a disk file beside the swap
// file) and the physical page allocator's calls for it. The cache's lists and disk I/O are PageCache.cs.
namespace PageLab.Core.GuestOs;

public sealed partial class GuestOperatingSystem
{
    /// <summary>The guest's page cache over its virtual disk (a file beside its swap file), made on first use.</summary>
    public PageCache PageCache => _cache ??= new PageCache(this, Options.SwapDirectory ?? Path.GetTempPath());
    /// <summary>The page cache if anything used it, else null.</summary>
    public PageCache? PageCacheIfUsed => _cache;

    /// <summary>Makes <paramref name="disk"/> (an open disk image, its files added with
    /// <see cref="PageCache.OpenFile"/>) the guest's virtual disk; the caller keeps owning the handle.</summary>
    public PageCache UseDisk(Microsoft.Win32.SafeHandles.SafeFileHandle disk)
    {
        if (_cache is not null) throw new InvalidOperationException($"{Vm.Name} already has a page cache over its disk");
        return _cache = new PageCache(this, Options.SwapDirectory ?? Path.GetTempPath(), disk);
    }

    // The page cache's side of the physical page allocator: reserve a page (reclaim may run), give an unused one
    // back, own a filled one, free a dropped one.
    internal ulong AllocateForCache(GuestProcess reader)
    {
        ulong g = AllocatePhysical(reader);
        if (reader.Killed)
        {
            ReturnUnused(g);
            throw new GuestProcessKilledException(reader);
        }
        return g;
    }

    internal void ReturnUnused(ulong g)
    {
        _isFree[g] = true;
        _free.Push(g);
    }

    internal void OwnByCache(ulong g) => _ownerPid[g] = CacheOwner;

    internal void FreeCachePage(ulong g)
    {
        _freedAt[g] = _now;
        _ownerPid[g] = NoOwner;
        _isFree[g] = true;
        _free.Push(g);
    }

    /// <summary>True while a page could still go to swap (a slot is free).</summary>
    internal bool CanSwap => Options.SwapLimitPages is not long limit || _swap.SlotsInUse < limit;

    /// <summary>Resident pages of processes the guest may page out (not pinned, not the balloon's).</summary>
    internal ulong AnonymousResidentPages() =>
        _processes.Where(p => !p.Killed && !p.Pinned && !p.IsBalloon).Aggregate(0UL, (n, p) => n + p.Resident);
}
