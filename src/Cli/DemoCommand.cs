// `pagelab demo`: two VMs on one arena. vm-a fills its pages through real demand-zero faults, then a
// run of its pages moves, scrubbed, to vm-b; the checks, tables and timings show what happened.
using System.Buffers.Binary;
using System.CommandLine;
using System.Diagnostics;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Native;
using Spectre.Console;

namespace PageLab.Cli;

internal static class DemoCommand
{
    /// <summary>Upper bound on --pages: vm-a writes every page, so this bounds the demo's memory (1 GiB at 4 KiB pages).</summary>
    private const int MaxPages = 262_144;

    /// <summary>Where the moved run starts in vm-a, when the VM is large enough.</summary>
    private const ulong PreferredRunStart = 8;

    /// <summary>The arena holds this many frames per guest page of one VM: both pools, vm-a's refill, and spare.</summary>
    private const uint FramesPerPage = 4;

    /// <summary>Longest p2m listing per VM before the rest is summarised.</summary>
    private const int MaxRunsShown = 16;

    public static Command Create()
    {
        var pages = CliOptions.Int("--pages", "Guest pages per VM; vm-a writes all of them", 1, MaxPages, 64);
        var run = CliOptions.Int("--run", "Length of the run of pages moved from vm-a to vm-b (at most --pages)", 1, MaxPages, 16);
        var command = new Command("demo", "Demand-zero faults in vm-a, then a run of pages moved, scrubbed, to vm-b.");
        command.Options.Add(pages);
        command.Options.Add(run);
        command.SetAction(result => Program.Guarded(() => Run(result.GetValue(pages), result.GetValue(run))));
        return command;
    }

    /// <summary>Why the options cannot run, naming the bad value; null if they can.</summary>
    internal static string? Validate(int pages, int run)
    {
        if (pages < 1 || pages > MaxPages) return $"--pages must be between 1 and {MaxPages}, got {pages}";
        if (run < 1 || run > pages) return $"--run must be between 1 and --pages ({pages}), got {run}";
        return null;
    }

    private static int Run(int pages, int run)
    {
        if (Validate(pages, run) is string invalid) return Program.Usage(invalid);

        ulong count = (ulong)pages, length = (ulong)run;
        var from = new GuestPage(count >= PreferredRunStart + length ? PreferredRunStart : 0);
        var to = new GuestPage(0);
        var checks = new List<Check>();

        using (HostArena arena = HostArena.Create((uint)pages * FramesPerPage, "pagelab-demo"))
        {
            using (GuestVm vmA = GuestVm.Create(arena, "vm-a", count, poolCapacity: (uint)pages),
                           vmB = GuestVm.Create(arena, "vm-b", count, poolCapacity: (uint)pages))
            {
                vmA.RefillPool();
                vmB.RefillPool();
                AnsiConsole.MarkupLineInterpolated($"[bold]Arena[/] {arena.FrameCount} frames of {arena.PageSize} bytes; [bold]vm-a[/] and [bold]vm-b[/] {pages} guest pages each, demand pools of {pages} frames.");

                // 1. Every first touch of an unbacked page is a real SIGSEGV, resolved by the native handler.
                var perPage = new double[count];
                for (ulong g = 0; g < count; g++)
                {
                    long start = Stopwatch.GetTimestamp();
                    WritePattern(vmA.Page(new GuestPage(g)), g);
                    perPage[g] = Stopwatch.GetElapsedTime(start).TotalMicroseconds;
                }
                ulong faults = vmA.Counters.DemandFaults;
                AnsiConsole.MarkupLineInterpolated($"vm-a wrote {pages} pages: [bold]{faults} demand-zero faults[/], median {Median(perPage):0.00} µs per page (fault + {arena.PageSize}-byte write; the median leaves out the first touch's JIT compilation).");
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
                var fromRun = new PageRun(from, length);
                var toRun = new PageRun(to, length);
                double totalUs = Micros(moveStart, mapped);
                AnsiConsole.MarkupLineInterpolated($"Moved vm-a {fromRun} to vm-b {toRun}: {totalUs:0.0} µs, [bold]{totalUs / length:0.00} µs per page[/] (unmap {Micros(moveStart, unmapped):0.0} + scrub {Micros(unmapped, scrubbed):0.0} + map {Micros(scrubbed, mapped):0.0} µs, after a one-page warm-up).");

                // 3. What the move must have done.
                checks.Add(CheckMovedPagesReadZero(vmB, toRun));
                checks.Add(CheckFramesOwnedBy(arena, vmB, toRun, frames));
                checks.Add(CheckUnbacked(vmA, fromRun));
                checks.Add(CheckOthersKeepPattern(vmA, fromRun));
                int refilled = vmA.RefillPool(); // the first touches emptied vm-a's pool
                checks.Add(CheckRetouchFaults(vmA, from, frames, refilled));

                AnsiConsole.WriteLine();
                AnsiConsole.Write(ChecksTable(checks));
                AnsiConsole.Write(VmTable(vmA, vmB));
                AnsiConsole.Write(MappingsTable(vmA, vmB));
                AnsiConsole.Write(ArenaTable(arena.Counts));
                AnsiConsole.MarkupLineInterpolated($"Process RSS: {Program.Bytes(arena.ResidentBytes())} (arena pages included).");
            }
            // The VMs are gone; the arena is disposed last, since their guest views mapped it.
        }

        AnsiConsole.MarkupLineInterpolated($"Disposed vm-b, vm-a, then the arena; process RSS now {Program.Bytes(IHostOs.Current.ResidentBytes())}.");

        List<Check> failed = checks.Where(c => !c.Passed).ToList();
        return failed.Count == 0
            ? 0
            : Program.Fail($"{failed.Count} demo check(s) failed: {string.Join("; ", failed.Select(c => $"{c.Name} ({c.Detail})"))}");
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

    private static Check CheckMovedPagesReadZero(GuestVm vm, PageRun run)
    {
        int dirty = PagesOf(run).Count(g => !IsZero(vm.Page(g)));
        return new($"{vm.Name} reads zeros on the moved pages", dirty == 0, $"{dirty} of {run.Length} pages hold data");
    }

    private static Check CheckFramesOwnedBy(HostArena arena, GuestVm vm, PageRun run, HostFrame[] frames)
    {
        bool owned = frames.All(f => arena.OwnerOf(f) == vm.Id);
        bool translated = frames.Length == (int)run.Length && PagesOf(run).Select(vm.Translate).SequenceEqual(frames.Select(f => (HostFrame?)f));
        string runs = string.Join(", ", PageRuns.Coalesce(frames));
        return new($"moved frames belong to {vm.Name}", owned && translated, $"{runs} owned by VM {vm.Id}, p2m {(translated ? "matches" : "differs")}");
    }

    private static Check CheckUnbacked(GuestVm vm, PageRun run)
    {
        int backed = PagesOf(run).Count(g => vm.StateOf(g) != GuestPageState.Unbacked);
        return new($"{vm.Name}'s moved pages are Unbacked", backed == 0, $"{backed} of {run.Length} still backed");
    }

    private static Check CheckOthersKeepPattern(GuestVm vm, PageRun moved)
    {
        var kept = new List<GuestPage>();
        for (ulong g = 0; g < vm.PageCount; g++)
            if (g < moved.Start.Value || g > moved.Last.Value) kept.Add(new GuestPage(g));
        int wrong = kept.Count(g => !HasPattern(vm.Page(g), g.Value));
        return new($"{vm.Name}'s other pages keep their data", wrong == 0, $"{kept.Count - wrong} of {kept.Count} intact");
    }

    private static Check CheckRetouchFaults(GuestVm vm, GuestPage page, HostFrame[] movedFrames, int refilled)
    {
        ulong before = vm.Counters.DemandFaults;
        bool zero = IsZero(vm.Page(page)); // a read of an unbacked page is a demand-zero fault too
        ulong after = vm.Counters.DemandFaults;
        HostFrame? frame = vm.Translate(page);
        bool fresh = frame is HostFrame f && !movedFrames.Contains(f);
        return new($"re-touching {vm.Name} {page} gives a fresh zero page", zero && fresh && after == before + 1,
            $"faults {before} -> {after}, now on {frame?.ToString() ?? "no frame"}, reads {(zero ? "zeros" : "data")} (pool refilled with {refilled})");
    }

    private static Table ChecksTable(List<Check> checks)
    {
        var table = new Table().Title("Checks").AddColumn("Check").AddColumn("Result").AddColumn("Detail");
        foreach (Check c in checks)
            table.AddRow(Markup.Escape(c.Name), c.Passed ? "[green]ok[/]" : "[red]FAILED[/]", Markup.Escape(c.Detail));
        return table;
    }

    private static Table VmTable(params GuestVm[] vms)
    {
        var table = new Table().Title("VMs").AddColumn("VM").AddColumn("Id")
            .AddColumn(new TableColumn("Pages").RightAligned())
            .AddColumn(new TableColumn("Backed pages").RightAligned())
            .AddColumn(new TableColumn("Frames held").RightAligned())
            .AddColumn(new TableColumn("Pool").RightAligned())
            .AddColumn(new TableColumn("Mappings").RightAligned())
            .AddColumn(new TableColumn("Demand faults").RightAligned());
        foreach (GuestVm vm in vms)
        {
            ulong backed = vm.Mappings().Aggregate(0UL, (sum, m) => sum + m.Pages.Length);
            table.AddRow(Markup.Escape(vm.Name), $"{vm.Id}", $"{vm.PageCount}", $"{backed}", $"{vm.HeldFrames}",
                $"{vm.PoolCount}", $"{vm.MappingCount}", $"{vm.Counters.DemandFaults}");
        }
        return table;
    }

    private static Table MappingsTable(params GuestVm[] vms)
    {
        var table = new Table().Title("p2m runs").AddColumn("VM").AddColumn("Guest pages -> host frames");
        foreach (GuestVm vm in vms)
        {
            List<(PageRun Pages, FrameRun Frames)> runs = vm.Mappings();
            foreach ((PageRun pages, FrameRun frames) in runs.Take(MaxRunsShown))
                table.AddRow(Markup.Escape(vm.Name), Markup.Escape($"{pages} -> {frames}"));
            if (runs.Count > MaxRunsShown)
                table.AddRow(Markup.Escape(vm.Name), $"... {runs.Count - MaxRunsShown} more runs");
            if (runs.Count == 0)
                table.AddRow(Markup.Escape(vm.Name), "(no backed pages)");
        }
        return table;
    }

    private static Table ArenaTable(FrameCounts counts)
    {
        var table = new Table().Title("Arena frames");
        foreach (string state in new[] { "Free", "Held", "Guest", "Parity", "Retired", "Total" })
            table.AddColumn(new TableColumn(state).RightAligned());
        table.AddRow($"{counts.Free}", $"{counts.Held}", $"{counts.Guest}", $"{counts.Parity}", $"{counts.Retired}", $"{counts.Total}");
        return table;
    }

    /// <summary>One verified claim of the demo.</summary>
    private sealed record Check(string Name, bool Passed, string Detail);
}
