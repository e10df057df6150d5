// `pagelab demo`: two VMs on one arena. vm-a fills its pages through real demand-zero faults, then a
// run of its pages moves, scrubbed, to vm-b; the checks, tables and timings show what happened (the setup is
// Lab's MoveDemo; this file parses and prints).
using System.CommandLine;
using PageLab.Core;
using PageLab.Core.Host;
using PageLab.Lab.Demos;
using Spectre.Console;

namespace PageLab.Cli;

internal static class DemoCommand
{
    /// <summary>Upper bound on --pages: vm-a writes every page, so this bounds the demo's memory (1 GiB at 4 KiB pages).</summary>
    private const int MaxPages = 262_144;

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

        MoveDemoResult r = MoveDemo.Run(pages, run);
        AnsiConsole.MarkupLineInterpolated($"[bold]Arena[/] {r.ArenaFrames} frames of {r.PageSize} bytes; [bold]vm-a[/] and [bold]vm-b[/] {pages} guest pages each, demand pools of {pages} frames.");
        AnsiConsole.MarkupLineInterpolated($"vm-a wrote {pages} pages: [bold]{r.Faults} demand-zero faults[/], median {r.MedianFaultMicros:0.00} µs per page (fault + {r.PageSize}-byte write; the median leaves out the first touch's JIT compilation).");
        AnsiConsole.MarkupLineInterpolated($"Moved vm-a {r.From} to vm-b {r.To}: {r.MoveMicros:0.0} µs, [bold]{r.MoveMicros / run:0.00} µs per page[/] (unmap {r.UnmapMicros:0.0} + scrub {r.ScrubMicros:0.0} + map {r.MapMicros:0.0} µs, after a one-page warm-up).");
        AnsiConsole.WriteLine();
        AnsiConsole.Write(ChecksTable(r.Checks));
        AnsiConsole.Write(VmTable(r.Vms));
        AnsiConsole.Write(MappingsTable(r.Vms));
        AnsiConsole.Write(ArenaTable(r.Arena));
        AnsiConsole.MarkupLineInterpolated($"Process RSS: {Program.Bytes(r.ResidentBytes)} (arena pages included).");
        AnsiConsole.MarkupLineInterpolated($"Disposed vm-b, vm-a, then the arena; process RSS now {Program.Bytes(r.ResidentBytesAfterDispose)}.");

        List<DemoCheck> failed = r.Failed;
        return failed.Count == 0
            ? 0
            : Program.Fail($"{failed.Count} demo check(s) failed: {string.Join("; ", failed.Select(c => $"{c.Name} ({c.Detail})"))}");
    }

    private static Table ChecksTable(List<DemoCheck> checks)
    {
        var table = new Table().Title("Checks").AddColumn("Check").AddColumn("Result").AddColumn("Detail");
        foreach (DemoCheck c in checks)
            table.AddRow(Markup.Escape(c.Name), c.Passed ? "[green]ok[/]" : "[red]FAILED[/]", Markup.Escape(c.Detail));
        return table;
    }

    private static Table VmTable(List<DemoVm> vms)
    {
        var table = new Table().Title("VMs").AddColumn("VM").AddColumn("Id")
            .AddColumn(new TableColumn("Pages").RightAligned())
            .AddColumn(new TableColumn("Backed pages").RightAligned())
            .AddColumn(new TableColumn("Frames held").RightAligned())
            .AddColumn(new TableColumn("Pool").RightAligned())
            .AddColumn(new TableColumn("Mappings").RightAligned())
            .AddColumn(new TableColumn("Demand faults").RightAligned());
        foreach (DemoVm vm in vms)
            table.AddRow(Markup.Escape(vm.Name), $"{vm.Id}", $"{vm.Pages}", $"{vm.BackedPages}", $"{vm.HeldFrames}",
                $"{vm.PoolCount}", $"{vm.MappingCount}", $"{vm.DemandFaults}");
        return table;
    }

    private static Table MappingsTable(List<DemoVm> vms)
    {
        var table = new Table().Title("p2m runs").AddColumn("VM").AddColumn("Guest pages -> host frames");
        foreach (DemoVm vm in vms)
        {
            List<(PageRun Pages, FrameRun Frames)> runs = vm.Mappings;
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
}
