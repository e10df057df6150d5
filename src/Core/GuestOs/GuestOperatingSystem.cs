// The guest OS model of one VM: a guest physical page allocator, processes with page tables
// (guest virtual -> guest physical, in software), and clock page-out to a real swap file.
// Every access ends in a real load or store on the VM's guest physical view.
using PageLab.Core.Guest;

namespace PageLab.Core.GuestOs;

public sealed record GuestOsOptions
{
    /// <summary>Reclaim starts when free guest pages fall to this many...</summary>
    public ulong LowWaterPages { get; init; } = 32;
    /// <summary>...and stops when this many are free.</summary>
    public ulong HighWaterPages { get; init; } = 96;
    /// <summary>Directory for the guest's swap file (a temp directory when null).</summary>
    public string? SwapDirectory { get; init; }
    /// <summary>Swap slots the guest may use; when they are all taken nothing more can be paged out
    /// (the guest is then under severe pressure). Unlimited when null.</summary>
    public long? SwapLimitPages { get; init; }
    /// <summary>How reclaim weighs anonymous pages against file pages once the page cache is not simply trimmed
    /// (Linux vm.swappiness, 0..200): 0 takes file pages only, 200 anonymous only.</summary>
    public int Swappiness { get; init; } = 60;
}

/// <summary>Free page reporting (Linux page_reporting over virtio-balloon): the guest tells the host which
/// free pages it may take, without a balloon. A page is reported once it has been free for
/// <see cref="DelayTicks"/>; a pass reports at most <see cref="FractionPerPass"/> of the free pages, so a
/// guest that frees memory gets it back to the host over several passes (Linux: 2 s delay, a sixteenth of a
/// free area per pass).</summary>
public sealed record FreePageReportingOptions
{
    public int DelayTicks { get; init; } = 2;
    public double FractionPerPass { get; init; } = 1.0 / 16;
}

/// <summary>Counters a guest OS keeps about its memory, as a balloon driver would report them.</summary>
public readonly record struct GuestMemoryStats(
    ulong TotalPages, ulong FreePages, ulong SwapOuts, ulong SwapIns, ulong MajorFaults, ulong MinorFaults, ulong OomKills)
{
    /// <summary>virtio-balloon's "disk caches": pages of the page cache.</summary>
    public ulong DiskCachePages { get; init; }
    /// <summary>virtio-balloon's "available memory": free pages plus clean cache pages (reclaimable without I/O).</summary>
    public ulong AvailablePages { get; init; }
    /// <summary>Page-cache pages reclaim dropped, misses on a dropped page (refaults), dirty pages written back.</summary>
    public ulong PageCacheDropped { get; init; }
    public ulong PageCacheRefaults { get; init; }
    public ulong DirtyWritebacks { get; init; }
}

public sealed partial class GuestOperatingSystem : IDisposable
{
    private const int NoOwner = -1, CacheOwner = -2;

    private readonly Stack<ulong> _free = new();        // LIFO: recently freed (backed) pages first
    private readonly bool[] _isFree;
    private readonly int[] _ownerPid;                  // per guest physical page
    private readonly ulong[] _ownerVpn;
    private readonly List<GuestProcess> _processes = new();
    private readonly GuestSwapFile _swap;
    private readonly byte[] _zeroPage;
    private readonly byte[] _ioBuffer;
    private ulong _clockHand;
    private ulong _swapOuts, _swapIns, _majorFaults, _minorFaults, _oomKills;
    private ulong _swapInsPeriod;
    private readonly int[] _freedAt;                   // per guest page: the tick it was last freed
    // Pages whose loss page-out found (and whose user it ended) before the engine's event for it came: the
    // event's MemoryFailure must not end the page's next user.
    private readonly Dictionary<ulong, string> _endedAtPageOut = new();
    private int _now;
    private PageCache? _cache;

    public GuestOperatingSystem(GuestVm vm, GuestOsOptions? options = null)
    {
        Vm = vm;
        Options = options ?? new GuestOsOptions();
        if (Options.Swappiness is < 0 or > 200)
            throw new ArgumentOutOfRangeException(nameof(options), Options.Swappiness, $"{vm.Name}: swappiness must be 0..200, got {Options.Swappiness}");
        if (Options.HighWaterPages <= Options.LowWaterPages || Options.HighWaterPages >= vm.PageCount)
            throw new ArgumentOutOfRangeException(nameof(options), Options,
                $"{vm.Name}: need LowWaterPages < HighWaterPages < the VM's {vm.PageCount} pages");
        _zeroPage = new byte[vm.Arena.PageSize];
        _ioBuffer = new byte[vm.Arena.PageSize];
        _isFree = new bool[vm.PageCount];
        _ownerPid = new int[vm.PageCount];
        _ownerVpn = new ulong[vm.PageCount];
        _freedAt = new int[vm.PageCount];
        Array.Fill(_ownerPid, NoOwner);
        for (ulong g = vm.PageCount; g-- > 0;)
        {
            _free.Push(g);
            _isFree[g] = true;
        }
        string dir = Options.SwapDirectory ?? Path.GetTempPath();
        _swap = new GuestSwapFile(Path.Combine(dir, $"pagelab-swap-{vm.Name}-{Environment.ProcessId}-{vm.Id}"), vm.Arena.PageSize);
    }

    public GuestVm Vm { get; }
    public GuestOsOptions Options { get; }
    public IReadOnlyList<GuestProcess> Processes => _processes;
    public ulong FreePages => (ulong)_free.Count;
    /// <summary>True if guest page <paramref name="g"/> is on the free list.</summary>
    public bool IsFree(GuestPage g) => _isFree[g.Value];

    /// <summary>Free guest pages that still have a host frame behind them (the hypervisor's view:
    /// the guest cannot tell these from free pages the host has taken back).</summary>
    public ulong FreeBackedPages() => (ulong)_free.Count - Vm.CountInState(_free, GuestPageState.Unbacked);
    public GuestSwapFile Swap => _swap;

    /// <summary>Called when reclaim cannot free enough: the balloon application's chance to deflate
    /// (deflate-on-OOM). Gets the pages wanted, returns how many it released.</summary>
    public Func<ulong, ulong>? SeverePressure { get; set; }

    /// <summary>The hypervisor's hook for a guest page that has no frame behind it: returns true when
    /// the VM's demand pool can take the fault. The argument is true when the guest has nothing left to
    /// page out (the host may then overcommit). Without a hook, such a page is used as is.</summary>
    public Func<bool, bool>? EnsureDemandFrame { get; set; }

    /// <summary>Pages the guest paged out that the host had already swapped out (each read back first).</summary>
    public long DoublePagings { get; private set; }

    public GuestMemoryStats Stats => new(Vm.PageCount, FreePages, _swapOuts, _swapIns, _majorFaults, _minorFaults, _oomKills)
    {
        DiskCachePages = _cache?.Pages ?? 0, AvailablePages = FreePages + (_cache?.CleanPagesCount ?? 0),
        PageCacheDropped = _cache?.Dropped ?? 0, PageCacheRefaults = _cache?.Refaults ?? 0, DirtyWritebacks = _cache?.DirtyWritebacks ?? 0,
    };

    /// <param name="balloon">The balloon driver's process: its pages are not the guest's working set.</param>
    public GuestProcess Spawn(string name, ulong virtualPages, bool pinned = false, bool balloon = false)
    {
        if (virtualPages == 0) throw new ArgumentOutOfRangeException(nameof(virtualPages), virtualPages, $"process '{name}' needs at least one page");
        var p = new GuestProcess(this, _processes.Count, name, virtualPages, pinned, balloon);
        _processes.Add(p);
        return p;
    }

    /// <summary>Reserves a contiguous run of <paramref name="pages"/> free guest physical pages for an
    /// application, as hugetlbfs reserves huge pages for a database's buffer pool: a pinned process whose
    /// virtual page v is guest page first + v, the highest free run (the LIFO free list hands out low pages
    /// first). The guest never pages them out; only the application gives them back
    /// (<see cref="Release(GuestProcess, ulong)"/>) and takes them back (<see cref="TakeBackRun"/>).
    /// Null if no free run is that long.</summary>
    public GuestProcess? SpawnPinnedRun(string name, ulong pages)
    {
        if (pages == 0 || pages > Vm.PageCount) throw new ArgumentOutOfRangeException(nameof(pages), pages, $"{Vm.Name}: a run of 1 to {Vm.PageCount} pages");
        ulong run = 0;
        ulong? first = null;
        for (ulong g = Vm.PageCount; g-- > 0;)
        {
            run = _isFree[g] ? run + 1 : 0;
            if (run == pages) { first = g; break; }
        }
        if (first is not ulong f) return null;
        var p = new GuestProcess(this, _processes.Count, name, pages, pinned: true, balloon: false) { RunFirst = f };
        _processes.Add(p);
        var take = new HashSet<ulong>();
        for (ulong v = 0; v < pages; v++) take.Add(f + v);
        TakeOffFreeList(take);
        foreach (ulong g in take) Own(p, g - f, g);
        return p;
    }

    /// <summary>Gives an application's run pages it released and the guest still has free back to it, up
    /// to <paramref name="max"/>, lowest first. Returns their guest pages (others may hold the rest: the
    /// balloon, another process).</summary>
    public List<GuestPage> TakeBackRun(GuestProcess p, ulong max)
    {
        if (p.RunFirst is not ulong f) throw new ArgumentException($"process '{p.Name}' has no reserved run", nameof(p));
        var take = new HashSet<ulong>();
        for (ulong v = 0; v < p.VirtualPages && (ulong)take.Count < max; v++)
            if (p.Pte[v] == 0 && _isFree[f + v]) take.Add(f + v);
        TakeOffFreeList(take);
        var got = new List<GuestPage>(take.Count);
        foreach (ulong g in take.Order())
        {
            Own(p, g - f, g);
            got.Add(new GuestPage(g));
        }
        return got;
    }

    // Removes these pages from the free list (one rebuild, keeping the others' order).
    private void TakeOffFreeList(HashSet<ulong> pages)
    {
        if (pages.Count == 0) return;
        ulong[] rest = _free.Where(g => !pages.Contains(g)).Reverse().ToArray();
        _free.Clear();
        foreach (ulong g in rest) _free.Push(g);
        foreach (ulong g in pages) _isFree[g] = false;
    }

    private void Own(GuestProcess p, ulong vpn, ulong g)
    {
        p.Pte[vpn] = (long)g + 1;
        p.Accessed[vpn] = true;
        p.Referenced[vpn] = true;
        _ownerPid[g] = p.Pid;
        _ownerVpn[g] = vpn;
        p.Resident++;
    }

    /// <summary>The guest physical page behind a resident virtual page (a walk of the guest page table).</summary>
    public GuestPage? Translate(GuestProcess p, ulong vpn) => p.ResidentPage(vpn) is ulong g ? new GuestPage(g) : null;

    /// <summary>Makes a virtual page resident (minor fault: a zeroed page; major fault: read back from
    /// swap) and marks it accessed. Returns its guest physical page.</summary>
    internal ulong EnsureResident(GuestProcess p, ulong vpn)
    {
        if (p.Killed) throw new GuestProcessKilledException(p);
        long pte = p.Pte[vpn];
        if (pte > 0)
        {
            p.Accessed[vpn] = true;
            p.Referenced[vpn] = true;
            return (ulong)(pte - 1);
        }
        ulong g = AllocatePhysical(p);
        if (p.Killed) throw new GuestProcessKilledException(p); // the OOM killer chose p itself
        Span<byte> page = Vm.Page(new GuestPage(g));
        if (pte < 0)
        {
            // Read into a buffer, then store through the guest view: a kernel read() straight into a page
            // the host has not backed yet would fail with EFAULT instead of taking the demand fault.
            _swap.ReadAndFree(-pte - 1, _ioBuffer);
            _ioBuffer.CopyTo(page);
            _swapIns++;
            _majorFaults++;
        }
        else
        {
            page.Clear();                      // never hand a process another's bytes
            _minorFaults++;
        }
        p.Pte[vpn] = (long)g + 1;
        p.Accessed[vpn] = true;
        p.Referenced[vpn] = true;
        if (pte < 0) _swapInsPeriod++;
        _ownerPid[g] = p.Pid;
        _ownerVpn[g] = vpn;
        p.Resident++;
        return g;
    }

    /// <summary>Unmaps a virtual page, freeing its guest page or swap slot.</summary>
    internal void Release(GuestProcess p, ulong vpn)
    {
        long pte = p.Pte[vpn];
        if (pte != 0) p.Releases++;
        if (pte > 0) FreePhysical((ulong)(pte - 1), p);
        else if (pte < 0) _swap.Free(-pte - 1);
        p.Pte[vpn] = 0;
        p.Accessed[vpn] = false;
        p.Referenced[vpn] = false;
        p.Age[vpn] = 0;
    }

    /// <summary>The host reports an uncorrectable error in guest page <paramref name="g"/>: the process
    /// using it is terminated (as Linux's memory-failure handling kills the user of a dirty page).
    /// Returns who was terminated.</summary>
    public string MemoryFailure(GuestPage g)
    {
        if (_endedAtPageOut.Remove(g.Value, out string? ended)) return $"{ended}, when page-out found {g} bad";
        int pid = _ownerPid[g.Value];
        if (pid == NoOwner) return $"nobody ({g} was free)";
        if (pid == CacheOwner) return _cache!.MemoryFailure(g.Value);
        GuestProcess p = _processes[pid];
        if (p.RunFirst is not null)
        {
            // An application heap's run: native code holds pointers into every page of it, so its pages are
            // never freed under it; the application ends the work that used the page instead.
            RunMemoryFailure?.Invoke(p, g);
            return $"application '{p.Name}' (pid {p.Pid}): its run stays; the application restarts the work that used {g}";
        }
        Kill(p);
        return $"process '{p.Name}' (pid {p.Pid})";
    }

    /// <summary>An uncorrected error hit a page of an application's reserved run (the process is not killed).</summary>
    public Action<GuestProcess, GuestPage>? RunMemoryFailure { get; set; }

    /// <summary>Terminates one process (its pages and swap slots are freed); the rest of the VM runs on.
    /// An application with a reserved run is refused: native code holds pointers into its pages.</summary>
    public void Kill(GuestProcess p)
    {
        if (p.RunFirst is not null)
            throw new InvalidOperationException($"process '{p.Name}' holds a reserved run its native code points into; it gives pages back itself");
        if (p.Killed) return;
        for (ulong v = 0; v < p.VirtualPages; v++) Release(p, v);
        p.Killed = true;
    }

    private ulong AllocatePhysical(GuestProcess requester)
    {
        if ((ulong)_free.Count <= Options.LowWaterPages) Reclaim(Options.HighWaterPages);
        if (_free.Count == 0 && SeverePressure is { } deflate) deflate(Options.HighWaterPages);
        if (_free.Count == 0) OomKill(requester);
        if (_free.Count == 0) throw new InvalidOperationException($"{Vm.Name}: no guest page left after reclaim and the OOM killer");
        ulong g = _free.Pop();
        _isFree[g] = false;
        if (Vm.StateOf(new GuestPage(g)) == GuestPageState.Unbacked && EnsureDemandFrame is { } ensure && !ensure(false))
        {
            // The host has no frame for this page right now: take a page the guest already has instead.
            _free.Push(g);
            _isFree[g] = true;
            bool backed(ulong c) => Vm.StateOf(new GuestPage(c)) != GuestPageState.Unbacked;
            if ((_cache?.Shrink(1, backed) ?? 0) == 0 && PageOutOne(requireBacked: true) is null && !ensure(true))
            {
                OomKill(requester);
                throw new GuestProcessKilledException(requester);
            }
            g = _free.Pop();
            _isFree[g] = false;
        }
        return g;
    }

    private void FreePhysical(ulong g, GuestProcess p)
    {
        _freedAt[g] = _now;
        _ownerPid[g] = NoOwner;
        _isFree[g] = true;
        _free.Push(g);
        p.Resident--;
    }

    /// <summary>Reclaim until <paramref name="target"/> pages are free: the page cache's share first (clean pages
    /// dropped, dirty ones written back; see <see cref="PageCache.ReclaimShare"/>), then clock page-out of
    /// anonymous pages (two sweeps at most), then whatever file pages are left.</summary>
    public void Reclaim(ulong target)
    {
        if (_cache is { } c && (ulong)_free.Count < target) c.Shrink(c.ReclaimShare(target - (ulong)_free.Count, Options.Swappiness));
        for (ulong scanned = 0; (ulong)_free.Count < target && scanned < 2 * Vm.PageCount; scanned++)
            ClockStep(requireBacked: false);
        if (_cache is { } last && (ulong)_free.Count < target) last.Shrink(target - (ulong)_free.Count);
    }

    private ulong? PageOutOne(bool requireBacked)
    {
        for (ulong scanned = 0; scanned < 2 * Vm.PageCount; scanned++)
            if (ClockStep(requireBacked) is ulong g) return g;
        return null;
    }

    // One step of the clock hand: clears an accessed bit, or pages out a cold page and returns it.
    private ulong? ClockStep(bool requireBacked)
    {
        ulong g = _clockHand;
        _clockHand = (_clockHand + 1) % Vm.PageCount;
        int pid = _ownerPid[g];
        if (pid is NoOwner or CacheOwner) return null;   // file pages go by the page cache's lists
        GuestProcess p = _processes[pid];
        ulong vpn = _ownerVpn[g];
        if (p.Pinned) return null;
        if (p.Accessed[vpn])
        {
            p.Accessed[vpn] = false;
            return null;
        }
        bool unbacked = Vm.StateOf(new GuestPage(g)) == GuestPageState.Unbacked;
        if (requireBacked && unbacked) return null;
        if (_swap.SlotsInUse >= Options.SwapLimitPages) return null;      // swap full: nothing can go out
        // Page-out is device I/O: it reads the frame (DMA), not the guest mapping, so it neither counts as
        // a guest access nor trips over a page the sampler made inaccessible. A page the host took back
        // (a reclaimed balloon page) reads as zeros, as ESX's shared zero page would. A page the host
        // swapped out has its content only in the host swap file, and a poisoned frame's bytes are not
        // the page's: both are read through the guest view, whose fault brings the page back (double
        // paging: the host swaps in a page only for the guest to page it out) or recovers it. So is a page
        // the kernel poisoned under its mapping (the engine says so): its frame is not its content either.
        var page = new GuestPage(g);
        GuestPageState state = Vm.StateOf(page);
        ReadOnlySpan<byte> content;
        bool bad = state == GuestPageState.Poisoned || Vm.IsKernelPoisoned(page);
        if (state == GuestPageState.Swapped || bad)
        {
            if (state == GuestPageState.Swapped) DoublePagings++;
            bool wasLost = bad && Vm.IsLost(page);
            Vm.Page(page).CopyTo(_ioBuffer);
            if (bad && !wasLost && Vm.IsLost(page))
            {
                // The read had the engine contain it: the content is gone. Its zeros never go to swap as the
                // process's data; the process is ended now, as Linux kills the user of a dirty page it finds
                // bad, and the engine's event for this loss later ends nobody else (the page is reused).
                _endedAtPageOut[g] = MemoryFailure(page);
                return g;
            }
            content = _ioBuffer;
        }
        else content = Vm.Translate(page) is HostFrame f ? Vm.Arena.FrameBytes(f) : _zeroPage;
        long slot = _swap.Write(content);
        _swapOuts++;
        p.Pte[vpn] = -(slot + 1);
        p.SwappedOut++;
        FreePhysical(g, p);
        return g;
    }

    /// <summary>The guest's clock, for free-page ages (ticks).</summary>
    public void SetTime(int tick) => _now = tick;

    private void OomKill(GuestProcess requester)
    {
        GuestProcess? victim = _processes.Where(p => !p.Killed && !p.Pinned).MaxBy(p => p.Resident) ?? requester;
        Kill(victim);
        _oomKills++;
    }

    public void Dispose()
    {
        _cache?.Dispose();
        _swap.Dispose();
    }
}
