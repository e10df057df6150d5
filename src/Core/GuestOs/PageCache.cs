// The guest's page cache: pages of files on the guest's virtual disk (a real host file, read and written with
// pread/pwrite) held in guest physical pages the guest OS owns, clean or dirty, on an inactive and an active
// list (Linux's double clock), with readahead, writeback before a dirty page is dropped, and shadow entries
// whose refault distance tells a working set that is being evicted from a one-off scan (Linux mm/workingset.c).
using Microsoft.Win32.SafeHandles;
using PageLab.Core.Guest;

namespace PageLab.Core.GuestOs;

public sealed class PageCache : IDisposable
{
    /// <summary>The readahead window of a sequential read at first, and at most (Linux: 128 KiB).</summary>
    public const int InitialReadaheadPages = 4, MaxReadaheadPages = 32;

    private const byte Dirty = 1, Referenced = 2, Marker = 4, Used = 8, Lost = 16;
    private readonly GuestOperatingSystem _os;
    private readonly SafeFileHandle _disk;
    private readonly bool _ownsDisk;
    private readonly int _pageSize;
    private readonly List<GuestFile> _files = new();
    private readonly Dictionary<long, ulong> _index = new();   // disk page -> guest page holding it
    private readonly Dictionary<long, ulong> _shadow = new();  // disk page -> nonresident age at its eviction
    private readonly long[] _diskPageOf;                       // per guest page: the disk page it holds, or -1
    private readonly byte[] _flags;                            // per guest page
    private readonly byte[] _age;                              // per guest page: working-set reports since last used
    private readonly PageLru _lru;
    private readonly byte[] _one;
    private byte[] _window;
    private long _diskPages;
    private ulong _nonresidentAge;      // evictions + activations (mm/workingset.c's nonresident_age)
    private ulong _dirtyPages;
    private ulong _activationsSeen;     // at the last reclaim: refaults that activated since make reclaim balance

    /// <param name="disk">An open disk image (its files added with <see cref="OpenFile"/>); null: a new, empty
    /// disk file in <paramref name="directory"/>, deleted when the cache is disposed (at once on Linux).</param>
    internal PageCache(GuestOperatingSystem os, string directory, SafeFileHandle? disk = null)
    {
        _os = os;
        _pageSize = os.Vm.Arena.PageSize;
        ulong pages = os.Vm.PageCount;
        _diskPageOf = new long[pages];
        Array.Fill(_diskPageOf, -1L);
        _flags = new byte[pages];
        _age = new byte[pages];
        _lru = new PageLru(pages);
        _one = new byte[_pageSize];
        _window = new byte[_pageSize * MaxReadaheadPages];
        if (disk is not null)
        {
            _disk = disk;
            _diskPages = RandomAccess.GetLength(disk) / _pageSize;
            return;
        }
        _ownsDisk = true;
        string path = Path.Combine(directory, $"pagelab-disk-{os.Vm.Name}-{Environment.ProcessId}-{os.Vm.Id}");
        if (OperatingSystem.IsWindows())
            _disk = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite, FileShare.None, FileOptions.DeleteOnClose);
        else
        {
            _disk = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite, FileShare.None);
            File.Delete(path);
        }
    }

    /// <summary>The guest's virtual disk (the file disk locations refer to; give it to recovery).</summary>
    public SafeFileHandle Disk => _disk;
    public IReadOnlyList<GuestFile> Files => _files;

    /// <summary>Called with clean pages just read from, or written back to, their file, and their disk
    /// locations (byte offsets into <see cref="Disk"/>): the hook recovery uses to protect them as clean pages
    /// with a disk copy. Null: nobody protects them.</summary>
    public Action<GuestPage[], long[]>? CleanPages { get; set; }

    public ulong Pages => _lru.Count(PageLru.Inactive) + _lru.Count(PageLru.Active);
    public ulong ActivePages => _lru.Count(PageLru.Active);
    public ulong InactivePages => _lru.Count(PageLru.Inactive);
    public ulong DirtyPages => _dirtyPages;
    public ulong CleanPagesCount => Pages - _dirtyPages;
    /// <summary>Pages dropped from the cache by reclaim (each clean by then).</summary>
    public ulong Dropped { get; private set; }
    /// <summary>Misses on a page the cache had dropped (a shadow entry was left), and those among them whose
    /// refault distance was within the working set, so the page came back active.</summary>
    public ulong Refaults { get; private set; }
    public ulong RefaultActivations { get; private set; }
    public ulong DirtyWritebacks { get; private set; }
    public ulong WritebackFailures { get; private set; }
    public ulong ReadMisses { get; private set; }
    public ulong ReadaheadPages { get; private set; }
    /// <summary>Pages whose content an uncorrectable memory error took (dirty ones lose their data).</summary>
    public ulong LostPages { get; private set; }

    public bool IsCached(GuestFile f, long page) => _index.ContainsKey(DiskPage(f, page));
    public bool IsActive(GuestFile f, long page) => _index.TryGetValue(DiskPage(f, page), out ulong g) && _lru.ListOf(g) == PageLru.Active;
    public bool IsDirty(GuestFile f, long page) => _index.TryGetValue(DiskPage(f, page), out ulong g) && (_flags[g] & Dirty) != 0;
    public bool HasShadow(GuestFile f, long page) => _shadow.ContainsKey(DiskPage(f, page));
    /// <summary>The guest page holding a file page, or null when it is not cached.</summary>
    public GuestPage? PageOf(GuestFile f, long page) => _index.TryGetValue(DiskPage(f, page), out ulong g) ? new GuestPage(g) : null;
    /// <summary>True if guest page <paramref name="g"/> holds a file page.</summary>
    public bool Holds(ulong g) => _diskPageOf[g] >= 0;
    /// <summary>The byte offset on the disk of a file page (its disk location).</summary>
    public long DiskOffset(GuestFile f, long page) => DiskPage(f, page) * _pageSize;

    /// <summary>Adds a file of <paramref name="pages"/> pages at the end of the disk, its content written with
    /// <paramref name="fill"/> (page index, the page's bytes) by real writes. On a failed write the disk keeps
    /// its files as they were.</summary>
    public GuestFile CreateFile(string name, long pages, Action<long, Span<byte>> fill)
    {
        if (pages <= 0) throw new ArgumentOutOfRangeException(nameof(pages), pages, $"file '{name}' needs at least one page");
        long first = _diskPages;
        int chunk = MaxReadaheadPages;
        for (long p = 0; p < pages; p += chunk)
        {
            int n = (int)Math.Min(chunk, pages - p);
            Span<byte> buf = _window.AsSpan(0, n * _pageSize);
            for (int i = 0; i < n; i++) fill(p + i, buf.Slice(i * _pageSize, _pageSize));
            RandomAccess.Write(_disk, buf, (first + p) * _pageSize);
        }
        return AddFile(name, first, pages);
    }

    /// <summary>A file already on the disk: <paramref name="pages"/> pages from disk page <paramref name="firstDiskPage"/>.</summary>
    public GuestFile OpenFile(string name, long firstDiskPage, long pages)
    {
        if (pages <= 0 || firstDiskPage < 0) throw new ArgumentOutOfRangeException(nameof(pages), pages, $"file '{name}': pages {firstDiskPage}+{pages}");
        return AddFile(name, firstDiskPage, pages);
    }

    private GuestFile AddFile(string name, long first, long pages)
    {
        var f = new GuestFile(_files.Count, name, first, pages);
        _files.Add(f);
        _diskPages = Math.Max(_diskPages, first + pages);
        return f;
    }

    /// <summary>read(): copies bytes of file page <paramref name="page"/> from <paramref name="offset"/> into
    /// <paramref name="into"/>, reading the page (and its readahead window) from the disk on a miss. A failed
    /// disk read throws <see cref="IOException"/> and leaves the cache as it was.</summary>
    public void Read(GuestProcess reader, GuestFile f, long page, int offset, Span<byte> into)
    {
        ulong g = Get(reader, f, page);
        _os.Vm.Page(new GuestPage(g)).Slice(offset, into.Length).CopyTo(into);
        ReadAhead(reader, f);
    }

    /// <summary>write(): stores <paramref name="bytes"/> into file page <paramref name="page"/> at
    /// <paramref name="offset"/> (a partial page is read first, as Linux does) and marks the page dirty.</summary>
    public void Write(GuestProcess writer, GuestFile f, long page, int offset, ReadOnlySpan<byte> bytes)
    {
        ulong g = Get(writer, f, page);
        // A store through the guest view: a page protected as clean takes a write fault and loses its disk copy.
        bytes.CopyTo(_os.Vm.Page(new GuestPage(g)).Slice(offset, bytes.Length));
        if ((_flags[g] & Dirty) == 0) _dirtyPages++;
        _flags[g] |= Dirty;
        ReadAhead(writer, f);
    }

    /// <summary>fsync(): writes every dirty page back (they stay cached, clean). Returns how many; a failed write
    /// leaves that page dirty and throws after the others were tried.</summary>
    public int Sync()
    {
        int done = 0;
        IOException? failed = null;
        var clean = new List<ulong>();
        foreach (byte list in new[] { PageLru.Inactive, PageLru.Active })
            foreach (ulong g in _lru.Pages(list).ToList())
            {
                if ((_flags[g] & Dirty) == 0) continue;
                try { if (WriteBack(g)) { done++; clean.Add(g); } }
                catch (IOException e) { failed ??= e; }
            }
        ProtectClean(clean);
        if (failed is not null) throw failed;
        return done;
    }

    // The guest page holding file page `page`: a hit marks it used (a second use on the inactive list activates
    // it; a hit on the readahead marker reads the next window ahead); a miss reads it from the disk.
    private ulong Get(GuestProcess p, GuestFile f, long page)
    {
        if ((ulong)page >= (ulong)f.Pages) throw new ArgumentOutOfRangeException(nameof(page), page, $"file '{f.Name}' has pages 0..{f.Pages - 1}");
        if (p.Killed) throw new GuestProcessKilledException(p);
        long d = DiskPage(f, page);
        if (_index.TryGetValue(d, out ulong g))
        {
            Accessed(g);
            if ((_flags[g] & Marker) != 0)
            {
                _flags[g] &= unchecked((byte)~Marker);
                f.ReadAheadDue = true;
            }
            f.LastPage = page;
            return g;
        }
        ReadMisses++;
        bool sequential = page == 0 || page == f.NextExpected || page == f.LastPage + 1;
        int w = !sequential ? 1 : f.ReadaheadWindowPages == 0 ? InitialReadaheadPages : Math.Min(f.ReadaheadWindowPages * 2, MaxReadaheadPages);
        g = Fill(p, f, page, w, demanded: true);
        if (!sequential) f.ReadaheadWindowPages = 0;     // a random miss resets the window
        f.LastPage = page;
        return g;
    }

    // Reads up to `window` pages from `page` (stopping at the file's end or a page already cached) into fresh guest
    // pages: reserve the pages, one pread, then commit the tables. Returns the guest page of `page`, which counts as
    // used if `demanded` (a miss; readahead's pages are used only when they are read). Any failure (no guest page, a
    // failed or short read) gives the reserved pages back and leaves the cache as it was.
    private ulong Fill(GuestProcess p, GuestFile f, long page, int window, bool demanded)
    {
        int n = 1;
        while (n < window && page + n < f.Pages && !_index.ContainsKey(DiskPage(f, page + n))) n++;
        var got = new List<ulong>(n);
        try
        {
            for (int i = 0; i < n; i++)
            {
                got.Add(_os.AllocateForCache(p));
                // Reclaim (which the allocation may run) only drops committed pages, never these. Readahead is a
                // guess: once memory is short it stops at the pages reserved so far rather than reclaim for more.
                if (i > 0 && _os.FreePages <= _os.Options.LowWaterPages) { n = i + 1; break; }
            }
            Span<byte> buf = _window.AsSpan(0, n * _pageSize);
            long at = DiskPage(f, page) * _pageSize;
            int read = 0;
            while (read < buf.Length)
            {
                int r = RandomAccess.Read(_disk, buf[read..], at + read);
                if (r == 0) throw new IOException($"{_os.Vm.Name}: reading file '{f.Name}' pages {page}..{page + n - 1}: read {read} of {buf.Length} bytes at disk offset {at} (the disk ends there)");
                read += r;
            }
            for (int i = 0; i < n; i++) buf.Slice(i * _pageSize, _pageSize).CopyTo(_os.Vm.Page(new GuestPage(got[i])));
        }
        catch
        {
            foreach (ulong g in got) _os.ReturnUnused(g);
            throw;
        }
        // Commit: every page into the cache, each on the inactive list unless its refault says it is working set.
        for (int i = 0; i < n; i++)
        {
            ulong g = got[i];
            long d = DiskPage(f, page + i);
            _os.OwnByCache(g);
            _index[d] = g;
            _diskPageOf[g] = d;
            _flags[g] = (byte)(i == 0 && demanded ? Referenced | Used : 0);
            _age[g] = 0;
            byte list = PageLru.Inactive;
            if (_shadow.Remove(d, out ulong evictedAt))
            {
                Refaults++;
                if (_nonresidentAge - evictedAt <= WorkingSetSize())
                {
                    list = PageLru.Active;
                    _nonresidentAge++;
                    RefaultActivations++;
                }
            }
            _lru.PushHead(g, list);
        }
        if (n > 1) _flags[got[n / 2]] |= Marker;
        f.NextExpected = page + n;
        f.ReadaheadWindowPages = window;
        if (f._reads.Count < 4096) f._reads.Add(n);
        ReadaheadPages += (ulong)(n - 1);
        ProtectClean(got);
        return got[0];
    }

    // A hit on the readahead marker reads the next window (asynchronous readahead in Linux; here it runs once the
    // access is done, so reclaim for its pages never takes the page just used). A failed read is not the reader's error.
    private void ReadAhead(GuestProcess p, GuestFile f)
    {
        if (!f.ReadAheadDue) return;
        f.ReadAheadDue = false;
        int window = Math.Min(f.ReadaheadWindowPages * 2, MaxReadaheadPages);
        if (f.NextExpected < 0 || f.NextExpected >= f.Pages || _index.ContainsKey(DiskPage(f, f.NextExpected))) return;
        try { Fill(p, f, f.NextExpected, window, demanded: false); }
        catch (IOException) { }
    }

    // mark_page_accessed(): an unreferenced page becomes referenced; a referenced inactive page is activated.
    private void Accessed(ulong g)
    {
        _flags[g] |= Used;
        if ((_flags[g] & Referenced) == 0) { _flags[g] |= Referenced; return; }
        if (_lru.ListOf(g) != PageLru.Inactive) return;
        _lru.PushHead(g, PageLru.Active);
        _flags[g] &= unchecked((byte)~Referenced);
        _nonresidentAge++;          // workingset_activation(): activations age the non-resident pages too
    }

    // The pages a refaulting file page competes with (mm/workingset.c): the active file pages, plus the anonymous
    // pages when the guest can swap (its evicted page could have stayed had anonymous memory gone instead).
    private ulong WorkingSetSize() => ActivePages + (_os.CanSwap ? _os.AnonymousResidentPages() : 0);

    /// <summary>Pages reclaim should take from the cache for <paramref name="need"/> pages: all of them while the
    /// inactive list holds enough and no refault was activated since the last reclaim (Linux's cache trim mode: a
    /// cache that is not thrashing goes before any anonymous page), and all of them when the guest cannot swap;
    /// else, as Linux's get_scan_count scans each list in proportion to its size times its weight, the file
    /// pages' part of (200 − swappiness) × file pages against swappiness × anonymous pages.</summary>
    internal ulong ReclaimShare(ulong need, int swappiness)
    {
        bool thrashing = RefaultActivations != _activationsSeen;
        _activationsSeen = RefaultActivations;
        if (!_os.CanSwap || (!thrashing && InactivePages >= need)) return Math.Min(need, Pages);
        double file = (200.0 - swappiness) * Pages, anon = (double)swappiness * _os.AnonymousResidentPages();
        if (file + anon == 0) return 0;
        return Math.Min(Pages, (ulong)Math.Ceiling(need * file / (file + anon)));
    }

    /// <summary>Drops up to <paramref name="count"/> cache pages, oldest inactive first (a dirty one is written back
    /// first, and kept dirty if the write fails; the active list's oldest pages are moved to the inactive list
    /// while it is the longer). Only pages
    /// <paramref name="accept"/> takes. Returns the guest pages freed.</summary>
    internal ulong Shrink(ulong count, Func<ulong, bool>? accept = null)
    {
        ulong freed = 0;
        for (ulong scanned = 0, limit = 2 * Pages + 2; freed < count && scanned < limit && Pages > 0; scanned++)
        {
            // The inactive list is kept at least as long as the active one (Linux: inactive_is_low).
            while (ActivePages > 0 && (InactivePages < ActivePages || InactivePages == 0))
            {
                ulong a = _lru.Tail(PageLru.Active)!.Value;
                _flags[a] &= unchecked((byte)~Referenced);
                _lru.PushHead(a, PageLru.Inactive);
            }
            // The referenced flag does not save the tail page: pages read with read() are not mapped, and Linux
            // reclaims such a clean page whatever its flag (folio_check_references); a second use activates instead.
            ulong g = _lru.Tail(PageLru.Inactive)!.Value;
            if (accept?.Invoke(g) == false)
            {
                _lru.PushHead(g, PageLru.Inactive);
                continue;
            }
            if ((_flags[g] & Dirty) != 0)
            {
                bool written;
                try { written = WriteBack(g); }
                catch (IOException) { written = false; }
                if (!written)
                {
                    _lru.PushHead(g, PageLru.Inactive);   // stays dirty and cached; reclaim moves on
                    continue;
                }
            }
            Evict(g);
            freed++;
        }
        return freed;
    }

    // Writes a dirty page to its disk location (the page's bytes as device I/O reads them, through the guest view).
    // Returns false, the page left dirty, when the write failed (counted) or the page's content was lost meanwhile.
    private bool WriteBack(ulong g)
    {
        var page = new GuestPage(g);
        bool wasLost = _os.Vm.IsLost(page);
        _os.Vm.Page(page).CopyTo(_one);
        if (!wasLost && _os.Vm.IsLost(page)) { _flags[g] |= Lost; return false; }   // the engine contained an error
        try { RandomAccess.Write(_disk, _one, _diskPageOf[g] * _pageSize); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            WritebackFailures++;
            throw new IOException($"{_os.Vm.Name}: writing back disk page {_diskPageOf[g]} from {page}: {e.Message}", e);
        }
        _flags[g] &= unchecked((byte)~Dirty);
        _dirtyPages--;
        DirtyWritebacks++;
        return true;
    }

    // Drops a clean page: a shadow entry keeps the eviction's nonresident age for its refault.
    private void Evict(ulong g)
    {
        long d = _diskPageOf[g];
        _shadow[d] = _nonresidentAge++;
        Forget(g);
        Dropped++;
    }

    private void Forget(ulong g)
    {
        if ((_flags[g] & Dirty) != 0) _dirtyPages--;
        _index.Remove(_diskPageOf[g]);
        _diskPageOf[g] = -1;
        _flags[g] = 0;
        _lru.Remove(g);
        _os.FreeCachePage(g);
    }

    /// <summary>An uncorrectable error took guest page <paramref name="g"/>'s content: it leaves the cache without a
    /// writeback (a dirty page's data is lost, as Linux reports to the file's next fsync).</summary>
    internal string MemoryFailure(ulong g)
    {
        long d = _diskPageOf[g];
        GuestFile? f = _files.FirstOrDefault(x => d >= x.FirstDiskPage && d < x.FirstDiskPage + x.Pages);
        bool dirty = (_flags[g] & Dirty) != 0;
        LostPages++;
        Forget(g);
        return $"page cache: page {d - (f?.FirstDiskPage ?? 0)} of file '{f?.Name}' dropped ({(dirty ? "dirty: its unwritten data is lost" : "clean: it is read again from its file")})";
    }

    private void ProtectClean(List<ulong> pages)
    {
        if (CleanPages is not { } protect || pages.Count == 0) return;
        var clean = pages.Where(g => _diskPageOf[g] >= 0 && (_flags[g] & Dirty) == 0).ToArray();
        if (clean.Length > 0) protect(clean.Select(g => new GuestPage(g)).ToArray(), clean.Select(g => _diskPageOf[g] * _pageSize).ToArray());
    }

    /// <summary>Per working-set report: each cache page's age in reports (0: used since the last one), counted into
    /// <paramref name="bins"/> by <paramref name="edges"/>.</summary>
    internal void CountAges(ReadOnlySpan<int> edges, ulong[] bins)
    {
        foreach (byte list in new[] { PageLru.Inactive, PageLru.Active })
            foreach (ulong g in _lru.Pages(list))
            {
                byte age = (_flags[g] & Used) != 0 ? (byte)0 : _age[g] == byte.MaxValue ? byte.MaxValue : (byte)(_age[g] + 1);
                _flags[g] &= unchecked((byte)~Used);
                _age[g] = age;
                int bin = 0;
                while (bin < edges.Length && age > edges[bin]) bin++;
                bins[bin]++;
            }
    }

    private static long DiskPage(GuestFile f, long page) => f.FirstDiskPage + page;

    public void Dispose()
    {
        if (_ownsDisk) _disk.Dispose();
    }
}
