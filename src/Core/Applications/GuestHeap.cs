// The guest application heap: a contiguous run of a VM's guest pages reserved for one application process
// (pinned, as hugetlbfs reserves a database's huge pages) with a native allocator over it (c/appheap.c).
// Shrink gives wholly free pages back to the guest OS free list (where the balloon can take them); Grow takes
// back the run's pages the guest still has free. One heap per process: SQLite's allocator is process-wide.
using PageLab.Core.Faults;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Applications;

/// <summary>What the heap holds (pl_app_stats). Bytes are block sizes as the allocator's callers see them
/// (SQLite counts the same sizes in sqlite3_memory_used).</summary>
public readonly record struct GuestHeapStats(
    long BytesInGuest, long Blocks, long HighWaterBytes, long HeldPages, long WhollyFreePages, long FailedAllocations,
    long Allocations, long BytesOutsideGuest, long BlocksOutsideGuest);

public sealed unsafe class GuestHeap : IDisposable
{
    private static readonly Lock Gate = new();
    private static GuestHeap? _current;
    private readonly GuestOperatingSystem _os;
    private readonly int _region; // the engine's id, kept so the heap can be removed after the VM's handle closed
    private bool _disposed;

    private GuestHeap(GuestOperatingSystem os, GuestProcess process, int region)
    {
        _os = os;
        Process = process;
        _region = region;
    }

    /// <summary>The process's heap, if one is installed.</summary>
    public static GuestHeap? Current { get { lock (Gate) return _current; } }

    public GuestProcess Process { get; }
    public GuestVm Vm => _os.Vm;
    public GuestPage First => new(Process.RunFirst!.Value);
    public ulong RunPages => Process.VirtualPages;

    /// <summary>Reserves a run of <paramref name="pages"/> free guest pages in <paramref name="os"/>'s VM for
    /// application <paramref name="name"/> and installs the process's heap over it. Throws if the guest has
    /// no free run that long, or a heap is installed already (one per process).</summary>
    public static GuestHeap Create(GuestOperatingSystem os, string name, ulong pages)
    {
        ArgumentNullException.ThrowIfNull(os);
        lock (Gate)
        {
            if (_current is { } other)
                throw new InvalidOperationException($"{os.Vm.Name}: the process already has an application heap (in VM '{other.Vm.Name}'); SQLite's allocator is process-wide, so one application VM per process");
            GuestProcess p = os.SpawnPinnedRun(name, pages)
                ?? throw new InvalidOperationException($"{os.Vm.Name}: no run of {pages} free guest pages for application '{name}' ({os.FreePages} pages free)");
            int rc, region;
            using (RegionUse use = os.Vm.Use())
            {
                region = use.Id;
                rc = Lib.AppCreate(region, p.RunFirst!.Value, pages);
            }
            if (rc != 0)
            {
                for (ulong v = 0; v < pages; v++) os.Release(p, v); // the run goes back as it came
                if (rc == Lib.EBUSY)
                    throw new InvalidOperationException($"{os.Vm.Name}: the fault engine already has an application heap (one per process)");
                FaultEngine.Check(rc, $"{os.Vm.Name}: installing the application heap");
            }
            var heap = new GuestHeap(os, p, region);
            _current = heap;
            return heap;
        }
    }

    public GuestHeapStats Stats
    {
        get
        {
            long* s = stackalloc long[Lib.AppStats];
            using RegionUse use = Vm.Use();
            FaultEngine.Check(Lib.AppStatsRead(use.Id, s, Lib.AppStats), $"{Vm.Name}: application heap statistics");
            return new GuestHeapStats(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8]);
        }
    }

    /// <summary>Gives up to <paramref name="maxPages"/> wholly free pages back to the guest OS free list
    /// (highest first). Returns how many.</summary>
    public int Shrink(int maxPages)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxPages);
        if (maxPages == 0) return 0;
        var pages = new ulong[Math.Min((ulong)maxPages, RunPages)];
        int n;
        using (RegionUse use = Vm.Use())
        fixed (ulong* p = pages)
            n = Lib.AppRelease(use.Id, p, (uint)pages.Length);
        FaultEngine.Check(n, $"{Vm.Name}: giving application pages back");
        ulong first = First.Value;
        for (int i = 0; i < n; i++) _os.Release(Process, pages[i] - first);
        return n;
    }

    /// <summary>Takes back up to <paramref name="maxPages"/> of the run's pages the guest has free. Returns how many.</summary>
    public int Grow(int maxPages)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(maxPages);
        List<GuestPage> got = _os.TakeBackRun(Process, (ulong)maxPages);
        if (got.Count == 0) return 0;
        ulong[] pages = got.Select(g => g.Value).ToArray();
        int rc;
        using (RegionUse use = Vm.Use())
        fixed (ulong* p = pages)
            rc = Lib.AppAcquire(use.Id, p, (uint)pages.Length);
        if (rc < 0)
        {
            foreach (ulong g in pages) _os.Release(Process, g - First.Value); // as they were
            FaultEngine.Check(rc, $"{Vm.Name}: taking application pages back");
        }
        return got.Count;
    }

    /// <summary>Guest pages of the run the application holds now.</summary>
    public IEnumerable<GuestPage> HeldPages()
    {
        for (ulong v = 0; v < RunPages; v++)
            if (Process.IsResident(v)) yield return new GuestPage(First.Value + v);
    }

    /// <summary>Uninstalls the heap. Throws (nothing changed) while blocks are live: freeing them later would
    /// find no heap (SQLite: close every connection and sqlite3_shutdown first).</summary>
    public void Dispose()
    {
        lock (Gate)
        {
            if (_disposed) return;
            // No RegionUse: the heap's tables are outside guest memory, and removing it touches none.
            int rc = Lib.AppDestroy(_region);
            if (rc == Lib.EBUSY)
                throw new InvalidOperationException($"{Vm.Name}: the application heap still has live blocks; free them first (SQLite: close every connection, then sqlite3_shutdown)");
            FaultEngine.Check(rc, $"{Vm.Name}: removing the application heap");
            _disposed = true;
            if (_current == this) _current = null;
        }
    }
}
