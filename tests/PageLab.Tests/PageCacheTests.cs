// The guest page cache on real files and real guest memory: reclaim order, writeback before a dirty page goes,
// refault distance, readahead, recovery of a clean cache page from its file, and failed disk I/O leaving it as it was.
using System.Runtime.InteropServices;
using PageLab.Core;
using PageLab.Core.Faults;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Recovery;
using PageLab.Lab.Workloads;

namespace PageLab.Tests;

public class PageCacheTests
{
    private static ulong Word(long page, int k) => FileWorkload.Word(page, k);

    private static void Fill(long page, Span<byte> bytes)
    {
        Span<ulong> w = MemoryMarshal.Cast<byte, ulong>(bytes);
        for (int k = 0; k < w.Length; k++) w[k] = Word(page, k);
    }

    private static bool HoldsFilePage(ReadOnlySpan<byte> bytes, long page)
    {
        ReadOnlySpan<ulong> w = MemoryMarshal.Cast<byte, ulong>(bytes);
        for (int k = 0; k < w.Length; k++)
            if (w[k] != Word(page, k)) return false;
        return true;
    }

    private static GuestProcess Anonymous(GuestOperatingSystem os, string name, ulong pages)
    {
        GuestProcess p = os.Spawn(name, pages);
        for (ulong v = 0; v < pages; v++) p.Page(v)[0] = 1;
        return p;
    }

    private static void ReadPage(PageCache c, GuestProcess p, GuestFile f, long page)
    {
        Span<byte> b = stackalloc byte[8];
        c.Read(p, f, page, 0, b);
    }

    [Fact]
    public void Clean_cache_pages_are_dropped_before_any_anonymous_page_is_swapped()
    {
        using var t = new TestArena(512);
        GuestVm vm = t.Vm("vm", 256);
        using var os = new GuestOperatingSystem(vm, new GuestOsOptions { LowWaterPages = 8, HighWaterPages = 24 });
        PageCache cache = os.PageCache;
        GuestFile f = cache.CreateFile("data", 400, Fill);
        GuestProcess reader = os.Spawn("reader", 1);
        Anonymous(os, "anon", 100);
        for (long p = 0; p < 120; p++) ReadPage(cache, reader, f, p);
        ulong cached = cache.Pages;
        Assert.True(cached >= 100, $"the cache holds {cached} pages after reading 120");

        Anonymous(os, "more", 80);          // needs ~80 pages: reclaim must make room

        Assert.Equal(0UL, os.Stats.SwapOuts);
        Assert.True(cache.Dropped >= 60, $"only {cache.Dropped} cache pages were dropped");
        Assert.Equal(cache.Pages, os.Stats.DiskCachePages);
        Assert.Equal(os.FreePages + cache.Pages, os.Stats.AvailablePages);   // every cache page is clean

        // With the cache gone, anonymous pages are what is left to page out.
        Anonymous(os, "most", 100);
        Assert.True(os.Stats.SwapOuts > 0, "no anonymous page went to swap once the cache was spent");
    }

    [Fact]
    public void A_dirty_page_is_written_back_to_its_file_before_it_is_dropped()
    {
        using var t = new TestArena(512);
        GuestVm vm = t.Vm("vm", 256);
        using var os = new GuestOperatingSystem(vm, new GuestOsOptions { LowWaterPages = 8, HighWaterPages = 24 });
        PageCache cache = os.PageCache;
        GuestFile f = cache.CreateFile("data", 64, Fill);
        GuestProcess writer = os.Spawn("writer", 1);
        byte[] mine = [1, 2, 3, 4, 5, 6, 7, 8];
        cache.Write(writer, f, 3, 16, mine);
        Assert.True(cache.IsDirty(f, 3));
        var disk = new byte[t.Arena.PageSize];
        RandomAccess.Read(cache.Disk, disk, cache.DiskOffset(f, 3));
        Assert.True(HoldsFilePage(disk, 3), "the write reached the disk before any writeback");

        for (int i = 0; cache.IsCached(f, 3); i++)
        {
            Assert.True(i < 8, "the dirty page was never dropped");
            Anonymous(os, $"p{i}", 40);
        }

        Assert.Equal(1UL, cache.DirtyWritebacks);
        Assert.Equal(0UL, cache.DirtyPages);
        RandomAccess.Read(cache.Disk, disk, cache.DiskOffset(f, 3));
        Assert.Equal(mine, disk[16..24]);
        disk.AsSpan(16, 8).Clear();
        Span<byte> expected = new byte[t.Arena.PageSize];
        Fill(3, expected);
        expected.Slice(16, 8).Clear();
        Assert.True(expected.SequenceEqual(disk), "the writeback changed bytes the process never wrote");
        var back = new byte[8];
        cache.Read(writer, f, 3, 16, back);      // a refault reads the written bytes from the file
        Assert.Equal(mine, back);
    }

    [Fact]
    public void A_page_refaulting_within_the_working_set_is_activated_and_a_one_off_scans_pages_are_not()
    {
        using var t = new TestArena(512);
        GuestVm vm = t.Vm("vm", 256);
        using var os = new GuestOperatingSystem(vm, new GuestOsOptions { LowWaterPages = 8, HighWaterPages = 24 });
        PageCache cache = os.PageCache;
        GuestFile hot = cache.CreateFile("hot", 1, Fill);       // one page: no readahead page refaults with it
        GuestFile big = cache.CreateFile("big", 1000, Fill);
        GuestProcess reader = os.Spawn("reader", 1);
        Anonymous(os, "anon", 100);                  // the working set a refault competes with

        ReadPage(cache, reader, hot, 0);
        long scanned = 0;
        while (!cache.HasShadow(hot, 0)) ReadPage(cache, reader, big, scanned++);
        Assert.True(scanned < 1000, "the hot page was never evicted");
        ReadPage(cache, reader, hot, 0);             // refault distance: a scan window or two, far below the working set
        Assert.True(cache.IsActive(hot, 0), "a page refaulting within the working set came back inactive");
        Assert.Equal(1UL, cache.RefaultActivations);

        while (scanned < 1000) ReadPage(cache, reader, big, scanned++);
        for (long p = 0; p < big.Pages; p++) Assert.False(cache.IsActive(big, p), $"page {p} of a one-off scan was activated ({cache.PageOf(big, p)}, hot at {cache.PageOf(hot, 0)}, {cache.ActivePages} active)");
        ulong refaults = cache.Refaults;
        Assert.True(cache.HasShadow(big, 400));
        ReadPage(cache, reader, big, 400);            // evicted ~450 evictions ago, more than the working set (a random miss: no readahead)
        Assert.Equal(refaults + 1, cache.Refaults);
        Assert.False(cache.IsActive(big, 400), "a page refaulting from beyond the working set was activated");
        Assert.Equal(1UL, cache.RefaultActivations);
    }

    [Fact]
    public void Readahead_grows_on_a_sequential_read_up_to_its_cap_and_stays_one_page_on_random_reads()
    {
        using var t = new TestArena(1024);
        GuestVm vm = t.Vm("vm", 768);
        using var os = new GuestOperatingSystem(vm);
        PageCache cache = os.PageCache;
        GuestFile seq = cache.CreateFile("seq", 300, Fill);
        GuestFile rnd = cache.CreateFile("rnd", 300, Fill);
        GuestProcess reader = os.Spawn("reader", 1);

        for (long p = 0; p < seq.Pages; p++) ReadPage(cache, reader, seq, p);
        Assert.Equal(PageCache.InitialReadaheadPages, seq.Reads[0]);
        int[] grew = seq.Reads.TakeWhile(n => n < PageCache.MaxReadaheadPages).ToArray();
        Assert.Equal([4, 8, 16], grew);
        Assert.Equal(PageCache.MaxReadaheadPages, seq.Reads.Max());
        Assert.Equal(300, seq.Reads.Sum());
        Assert.Equal(1UL, cache.ReadMisses);         // the marker page read every later window ahead of the reader

        var rng = new Random(5);
        ulong misses = cache.ReadMisses;
        for (int i = 0; i < 40; i++) ReadPage(cache, reader, rnd, 1 + 7 * rng.Next(40));
        Assert.All(rnd.Reads, n => Assert.Equal(1, n));
        Assert.True(cache.ReadMisses > misses);
    }

    [Fact]
    public void A_clean_cache_page_hit_by_a_memory_error_is_refilled_from_its_file_bit_exact()
    {
        using var t = new TestArena(256);
        GuestVm vm = t.Vm("vm", 128);
        using var os = new GuestOperatingSystem(vm, new GuestOsOptions { LowWaterPages = 8, HighWaterPages = 24 });
        using var engine = new RecoveryEngine(vm);
        engine.Unrecoverable = os.MemoryFailure;
        PageCache cache = os.PageCache;
        engine.UseDiskFile(cache.Disk);
        cache.CleanPages = (pages, offsets) =>
        {
            var at = pages.Zip(offsets).ToDictionary(x => x.First, x => x.Second);
            engine.Protect(pages, PageCategory.CleanWithDiskCopy, g => at[g]);
        };
        GuestFile f = cache.CreateFile("data", 16, Fill);
        GuestProcess reader = os.Spawn("reader", 1);
        for (long p = 0; p < 16; p++) ReadPage(cache, reader, f, p);
        GuestPage g = cache.PageOf(f, 5)!.Value;
        Assert.Equal(GuestPageState.Tracked, vm.StateOf(g));

        (int offset, byte[] mask) = MemoryErrorInjector.Pattern(ErrorKind.WholePage, t.Arena.PageSize, new Random(3));
        HostFrame bad = MemoryErrorInjector.IntoPage(vm, g, offset, mask)!.Value;
        Assert.Equal(ErrorOutcome.Recovered, engine.Report(bad).Outcome);
        Assert.True(HoldsFilePage(vm.Page(g), 5), "the refilled page is not its file's bytes");
        Assert.Equal(g, cache.PageOf(f, 5));
        var word = new byte[8];
        cache.Read(reader, f, 5, 64, word);
        Assert.Equal(Word(5, 8), BitConverter.ToUInt64(word));

        // A dirty page has no good copy: the error is contained and the page leaves the cache (its data is lost).
        cache.Write(reader, f, 6, 0, [9, 9, 9, 9, 9, 9, 9, 9]);
        GuestPage dirty = cache.PageOf(f, 6)!.Value;
        HostFrame bad2 = MemoryErrorInjector.IntoPage(vm, dirty, 0, [0xFF])!.Value;
        Assert.Equal(ErrorOutcome.Contained, engine.Report(bad2).Outcome);
        Assert.False(cache.IsCached(f, 6));
        Assert.Equal(1UL, cache.LostPages);
        cache.Read(reader, f, 6, 0, word);            // read again from the file: the unwritten bytes are gone
        Assert.Equal(Word(6, 0), BitConverter.ToUInt64(word));
    }

    [Fact]
    public void A_failed_writeback_leaves_the_page_dirty_and_cached_and_a_failed_read_leaves_the_cache_as_it_was()
    {
        using var t = new TestArena(256);
        GuestVm vm = t.Vm("vm", 128);
        using var os = new GuestOperatingSystem(vm, new GuestOsOptions { LowWaterPages = 8, HighWaterPages = 24 });
        string path = Path.Combine(Path.GetTempPath(), $"pagelab-rodisk-{Guid.NewGuid():N}");
        try
        {
            var image = new byte[32 * t.Arena.PageSize];
            for (int p = 0; p < 32; p++) Fill(p, image.AsSpan(p * t.Arena.PageSize, t.Arena.PageSize));
            File.WriteAllBytes(path, image);
            using Microsoft.Win32.SafeHandles.SafeFileHandle readOnly = File.OpenHandle(path, FileMode.Open, FileAccess.Read);
            PageCache cache = os.UseDisk(readOnly);
            GuestFile f = cache.OpenFile("ro", 0, 32);
            GuestProcess writer = os.Spawn("writer", 1);
            cache.Write(writer, f, 2, 8, [7, 7, 7, 7, 7, 7, 7, 7]);
            GuestPage g = cache.PageOf(f, 2)!.Value;
            ulong pages = cache.Pages;

            Assert.Throws<IOException>(() => cache.Sync());          // pwrite on a read-only handle: EBADF
            Assert.True(cache.IsDirty(f, 2));
            Assert.Equal(g, cache.PageOf(f, 2));
            Assert.Equal((1UL, 0UL, 1UL), (cache.DirtyPages, cache.DirtyWritebacks, cache.WritebackFailures));
            os.Reclaim(os.FreePages + pages);                        // reclaim tries it too, and moves on
            Assert.True(cache.IsDirty(f, 2) && cache.IsCached(f, 2), "a page whose writeback failed was dropped");
            Assert.Equal(7, vm.Page(g)[8]);
            Assert.True(HoldsFilePage(File.ReadAllBytes(path).AsSpan(2 * t.Arena.PageSize, t.Arena.PageSize), 2), "the read-only file changed");

            // Adding a file writes it to the disk: refused by the read-only handle, the disk keeps the files it had.
            Assert.ThrowsAny<Exception>(() => cache.CreateFile("new", 4, Fill));
            Assert.Equal(["ro"], cache.Files.Select(x => x.Name));

            // A file past the disk's end: the read comes back short; no page is taken, nothing is cached.
            GuestFile past = cache.OpenFile("past", 30, 8);
            ulong free = os.FreePages, cached = cache.Pages;
            Assert.Throws<IOException>(() => cache.Read(writer, past, 4, 0, new byte[8]));
            Assert.Equal((free, cached), (os.FreePages, cache.Pages));
            Assert.False(cache.IsCached(past, 4));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData(0)]
    [InlineData(200)]
    public void Once_the_cache_thrashes_swappiness_decides_between_file_and_anonymous_pages(int swappiness)
    {
        using var t = new TestArena(512);
        GuestVm vm = t.Vm("vm", 256);
        using var os = new GuestOperatingSystem(vm, new GuestOsOptions { LowWaterPages = 8, HighWaterPages = 24, Swappiness = swappiness });
        PageCache cache = os.PageCache;
        GuestFile hot = cache.CreateFile("hot", 1, Fill);
        GuestFile big = cache.CreateFile("big", 400, Fill);
        GuestProcess reader = os.Spawn("reader", 1);
        Anonymous(os, "anon", 60);
        ReadPage(cache, reader, hot, 0);
        for (long p = 0; !cache.HasShadow(hot, 0); p++) ReadPage(cache, reader, big, p);
        ReadPage(cache, reader, hot, 0);             // a refault within the working set: the cache is thrashing
        Assert.Equal(1UL, cache.RefaultActivations);
        ulong dropped = cache.Dropped, swapped = os.Stats.SwapOuts;

        os.Reclaim(os.FreePages + 40);

        if (swappiness == 0)
        {
            Assert.Equal(swapped, os.Stats.SwapOuts);
            Assert.True(cache.Dropped - dropped >= 40, $"{cache.Dropped - dropped} cache pages dropped");
        }
        else
        {
            Assert.Equal(dropped, cache.Dropped);
            Assert.True(os.Stats.SwapOuts - swapped >= 40, $"{os.Stats.SwapOuts - swapped} anonymous pages swapped");
        }
    }

    [Fact]
    public void The_working_set_report_counts_file_pages_apart_and_available_memory_leaves_dirty_pages_out()
    {
        using var t = new TestArena(512);
        GuestVm vm = t.Vm("vm", 256);
        using var os = new GuestOperatingSystem(vm, new GuestOsOptions { LowWaterPages = 8, HighWaterPages = 24 });
        PageCache cache = os.PageCache;
        GuestFile f = cache.CreateFile("data", 30, Fill);
        GuestProcess reader = os.Spawn("reader", 1);
        Anonymous(os, "anon", 50);
        for (long p = 0; p < 30; p++) ReadPage(cache, reader, f, p);
        cache.Write(reader, f, 7, 0, [1, 2, 3, 4, 5, 6, 7, 8]);

        WorkingSetReport r = os.ReportWorkingSet([0, 2]);
        Assert.Equal(30UL, r.Bins.Aggregate(0UL, (n, b) => n + b.FilePages));
        Assert.Equal(50UL, r.Bins.Aggregate(0UL, (n, b) => n + b.AnonPages));
        Assert.Equal(30UL, r.Bins[0].FilePages);            // all used since the last report
        r = os.ReportWorkingSet([0, 2]);
        Assert.Equal(30UL, r.Bins[1].FilePages);            // none since: one period old

        GuestMemoryStats s = os.Stats;
        Assert.Equal(30UL, s.DiskCachePages);
        Assert.Equal(os.FreePages + 29, s.AvailablePages);  // the dirty page needs a write before it is free
    }
}
