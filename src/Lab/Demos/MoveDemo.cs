// `pagelab demo`'s setup: two VMs on one arena; vm-a fills its pages through real demand-zero faults, then a
// run of its pages moves, scrubbed, to vm-b. Returns the timings, the checks and what the VMs and arena hold.
using System.Buffers.Binary;
using System.Diagnostics;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Native;

namespace PageLab.Lab.Demos;

/// <summary>One verified claim of the demo.</summary>
public sealed record DemoCheck(string Name, bool Passed, string Detail);

/// <summary>A VM as the demo left it, read before it was disposed.</summary>
public sealed record DemoVm(string Name, int Id, ulong Pages, ulong BackedPages, long HeldFrames, int PoolCount, long MappingCount,
    ulong DemandFaults, List<(PageRun Pages, FrameRun Frames)> Mappings);

/// <summary>What the demo did and measured. Times are in microseconds; the move's is after a one-page warm-up.</summary>
public sealed record MoveDemoResult(
    uint ArenaFrames, int PageSize, int Pages, ulong Faults, double MedianFaultMicros,
    PageRun From, PageRun To, double UnmapMicros, double ScrubMicros, double MapMicros,
    List<DemoCheck> Checks, List<DemoVm> Vms, FrameCounts Arena, long ResidentBytes, long ResidentBytesAfterDispose)
{
    public double MoveMicros => UnmapMicros + ScrubMicros + MapMicros;
    public List<DemoCheck> Failed => Checks.Where(c => !c.Passed).ToList();
}

public static class MoveDemo
{
    /// <summary>Where the moved run starts in vm-a, when the VM is large enough.</summary>
    private const ulong PreferredRunStart = 8;

    /// <summary>The arena holds this many frames per guest page of one VM: both pools, vm-a's refill, and spare.</summary>
    private const uint FramesPerPage = 4;

    /// <summary>Runs the demo: <paramref name="pages"/> guest pages per VM, a run of <paramref name="run"/> pages moved.</summary>
    public static MoveDemoResult Run(int pages, int run)
    {
        if (pages < 1) throw new ArgumentOutOfRangeException(nameof(pages), pages, "at least 1");
        if (run < 1 || run > pages) throw new ArgumentOutOfRangeException(nameof(run), run, $"between 1 and {pages}");
        ulong count = (ulong)pages, length = (ulong)run;
        var from = new GuestPage(count >= PreferredRunStart + length ? PreferredRunStart : 0);
        var to = new GuestPage(0);
        var checks = new List<DemoCheck>();
        uint arenaFrames;
        int pageSize;
        ulong faults;
        double median, unmapUs, scrubUs, mapUs;
        List<DemoVm> vms;
        FrameCounts counts;
        long resident;

        using (HostArena arena = HostArena.Create((uint)pages * FramesPerPage, "pagelab-demo"))
        {
            using (GuestVm vmA = GuestVm.Create(arena, "vm-a", count, poolCapacity: (uint)pages),
                           vmB = GuestVm.Create(arena, "vm-b", count, poolCapacity: (uint)pages))
            {
                vmA.RefillPool();
                vmB.RefillPool();
                (arenaFrames, pageSize) = (arena.FrameCount, arena.PageSize);

                // 1. Every first touch of an unbacked page is a real SIGSEGV, resolved by the native handler.
                var perPage = new double[count];
                for (ulong g = 0; g < count; g++)
                {
                    long start = Stopwatch.GetTimestamp();
                    WritePattern(vmA.Page(new GuestPage(g)), g);
                    perPage[g] = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
                }
                faults = vmA.Counters.DemandFaults;
                median = Median(perPage);
                checks.Add(new("every first touch faulted", faults == count, $"{faults} faults for {pages} pages"));

                // 2. Move the run: unmap (frames come back Held with content), scrub, map into vm-b.
                WarmUpMovePath(arena, vmB);
                long moveStart = Stopwatch.GetTimestamp();
                HostFrame[] frames = vmA.Unmap(from, length);
                long unmapped = Stopwatch.GetTimestamp();
                arena.ZeroInPlace(frames); // a page moving between VMs must never carry the source's data
                long scrubbed = Stopwatch.GetTimestamp();
                HostFrame[] displaced = MapOrRelease(arena, vmB, to, frames);
                long mapped = Stopwatch.GetTimestamp();
                arena.Release(displaced); // vm-b's target pages were never touched, so this is empty
                (unmapUs, scrubUs, mapUs) = (Micros(moveStart, unmapped), Micros(unmapped, scrubbed), Micros(scrubbed, mapped));
                var fromRun = new PageRun(from, length);
                var toRun = new PageRun(to, length);

                // 3. What the move must have done.
                checks.Add(CheckMovedPagesReadZero(vmB, toRun));
                checks.Add(CheckFramesOwnedBy(arena, vmB, toRun, frames));
                checks.Add(CheckUnbacked(vmA, fromRun));
                checks.Add(CheckOthersKeepPattern(vmA, fromRun));
                int refilled = vmA.RefillPool(); // the first touches emptied vm-a's pool
                checks.Add(CheckRetouchFaults(vmA, from, frames, refilled));

                vms = [Describe(vmA), Describe(vmB)];
                counts = arena.Counts;
                resident = arena.ResidentBytes();
            }
            // The VMs are gone; the arena is disposed last, since their guest views mapped it.
        }
        return new MoveDemoResult(arenaFrames, pageSize, pages, faults, median, new PageRun(from, length), new PageRun(to, length),
            unmapUs, scrubUs, mapUs, checks, vms, counts, resident, IHostOs.Current.ResidentBytes());
    }

    private static DemoVm Describe(GuestVm vm)
    {
        List<(PageRun Pages, FrameRun Frames)> runs = vm.Mappings();
        ulong backed = runs.Aggregate(0UL, (sum, m) => sum + m.Pages.Length);
        return new DemoVm(vm.Name, vm.Id, vm.PageCount, backed, vm.HeldFrames, vm.PoolCount, vm.MappingCount, vm.Counters.DemandFaults, runs);
    }

    /// <summary>Maps Held frames into a VM; if the map fails they are released, so no frame is lost.</summary>
    private static HostFrame[] MapOrRelease(HostArena arena, GuestVm vm, GuestPage at, HostFrame[] frames)
    {
        try
        {
            return vm.Map(at, frames);
        }
        catch
        {
            arena.Release(frames); // Map is all or nothing: on failure the frames are still Held
            throw;
        }
    }

    /// <summary>Runs the move path once on vm-b's last page (back, unmap, scrub, map back, unback) so the timed
    /// move measures memory operations rather than JIT compilation. Leaves the VM and the arena as they were.</summary>
    private static void WarmUpMovePath(HostArena arena, GuestVm vm)
    {
        var page = new GuestPage(vm.PageCount - 1);
        vm.Back(page, 1);
        HostFrame[] frames = vm.Unmap(page, 1);
        arena.ZeroInPlace(frames);
        arena.Release(MapOrRelease(arena, vm, page, frames));
        vm.Unback(page, 1);
    }

    private static double Median(double[] values)
    {
        double[] sorted = [.. values];
        Array.Sort(sorted);
        int mid = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    }

    /// <summary>A page's pattern: its page number in the first 8 bytes, then a non-zero byte derived from it.</summary>
    private static void WritePattern(Span<byte> page, ulong g)
    {
        page.Fill(PatternByte(g));
        BinaryPrimitives.WriteUInt64LittleEndian(page, g);
    }

    private static bool HasPattern(ReadOnlySpan<byte> page, ulong g) =>
        BinaryPrimitives.ReadUInt64LittleEndian(page) == g && page[8..].IndexOfAnyExcept(PatternByte(g)) < 0;

    private static byte PatternByte(ulong g) => (byte)(1 + g % 255);

    private static bool IsZero(ReadOnlySpan<byte> page) => page.IndexOfAnyExcept((byte)0) < 0;

    private static double Micros(long fromTimestamp, long toTimestamp) =>
        Stopwatch.GetElapsedTime(fromTimestamp, toTimestamp).TotalMicroseconds;

    private static IEnumerable<GuestPage> PagesOf(PageRun run)
    {
        for (ulong g = run.Start.Value; g <= run.Last.Value; g++) yield return new GuestPage(g);
    }

    private static DemoCheck CheckMovedPagesReadZero(GuestVm vm, PageRun run)
    {
        int dirty = PagesOf(run).Count(g => !IsZero(vm.Page(g)));
        return new($"{vm.Name} reads zeros on the moved pages", dirty == 0, $"{dirty} of {run.Length} pages hold data");
    }

    private static DemoCheck CheckFramesOwnedBy(HostArena arena, GuestVm vm, PageRun run, HostFrame[] frames)
    {
        bool owned = frames.All(f => arena.OwnerOf(f) == vm.Id);
        bool translated = frames.Length == (int)run.Length && PagesOf(run).Select(vm.Translate).SequenceEqual(frames.Select(f => (HostFrame?)f));
        string runs = string.Join(", ", PageRuns.Coalesce(frames));
        return new($"moved frames belong to {vm.Name}", owned && translated, $"{runs} owned by VM {vm.Id}, p2m {(translated ? "matches" : "differs")}");
    }

    private static DemoCheck CheckUnbacked(GuestVm vm, PageRun run)
    {
        int backed = PagesOf(run).Count(g => vm.StateOf(g) != GuestPageState.Unbacked);
        return new($"{vm.Name}'s moved pages are Unbacked", backed == 0, $"{backed} of {run.Length} still backed");
    }

    private static DemoCheck CheckOthersKeepPattern(GuestVm vm, PageRun moved)
    {
        var kept = new List<GuestPage>();
        for (ulong g = 0; g < vm.PageCount; g++)
            if (g < moved.Start.Value || g > moved.Last.Value) kept.Add(new GuestPage(g));
        int wrong = kept.Count(g => !HasPattern(vm.Page(g), g.Value));
        return new($"{vm.Name}'s other pages keep their data", wrong == 0, $"{kept.Count - wrong} of {kept.Count} intact");
    }

    private static DemoCheck CheckRetouchFaults(GuestVm vm, GuestPage page, HostFrame[] movedFrames, int refilled)
    {
        ulong before = vm.Counters.DemandFaults;
        bool zero = IsZero(vm.Page(page)); // a read of an unbacked page is a demand-zero fault too
        ulong after = vm.Counters.DemandFaults;
        HostFrame? frame = vm.Translate(page);
        bool fresh = frame is HostFrame f && !movedFrames.Contains(f);
        return new($"re-touching {vm.Name} {page} gives a fresh zero page", zero && fresh && after == before + 1,
            $"faults {before} -> {after}, now on {frame?.ToString() ?? "no frame"}, reads {(zero ? "zeros" : "data")} (pool refilled with {refilled})");
    }
}
