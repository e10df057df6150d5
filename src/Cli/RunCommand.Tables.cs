// What `pagelab run` shows: the live table of every VM at a tick, the end-of-run summary table, page sharing
// over the run, and the comparison of policies; every column of a VM's figures comes from the per-VM record.
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;
using Spectre.Console;
using Spectre.Console.Rendering;

namespace PageLab.Cli;

internal static partial class RunCommand
{
    private static Core.Scheduling.Reclamation Order(Scenario s) => Core.Scheduling.ReclamationParse.Parse(s.Reclamation);

    // True when the run shares pages (the order shares and a VM opted in): its tables get the sharing columns.
    private static bool Shares(Scenario s) => Order(s).HasFlag(Core.Scheduling.Reclamation.Share) && s.Vms.Any(v => v.Sharing);

    // Page sharing over the run, in lines that fit 80 columns whatever the counts.
    private static void WriteSharing(Core.Sharing.SharingMetrics m, TickSnapshot last)
    {
        Console.WriteLine($"sharing: {m.PagesScanned:N0} pages scanned ({m.ScanRatePagesPerSecond:N0}/s), " +
                          $"{m.ScanTime.TotalSeconds:0.000} s CPU scanning;");
        Console.WriteLine($"  {last.Sharing.FramesSaved:N0} frames saved: {last.Sharing.SharingPages:N0} pages " +
                          $"on {last.Sharing.SharedFrames:N0} shared frames;");
        Console.WriteLine($"  {m.CowBreaks:N0} copy-on-write breaks, {m.PagesMerged:N0} pages merged");
        if (m.MapLimitHits > 0)
            Console.WriteLine($"  {m.MapLimitHits:N0} merges refused: vm.max_map_count is full");
    }

    // The live table of every VM at a tick, fitted to the width: the least telling columns go first.
    private static IRenderable Table(TickSnapshot t, Scenario s, string progress)
    {
        // Host memory is hostPages; the arena has slack past it (demand pools, a balloon batch, parity
        // frames), so its free frames are not free host memory.
        long hostFree = Math.Max(0, (long)s.HostPages - t.Vms.Sum(v => v.HeldFrames));
        var table = new FittedTable($"{progress} · host pages not held by a VM {hostFree} · free arena frames (incl. slack) {t.FreeFrames} · moved {t.TransferredFrames}")
            .Column("VM", 0);
        // The columns are the per-VM record's (VmMeasures): sharing's where the run shares, an application's where one runs.
        List<VmMeasure> columns = VmMeasures.TableColumns(sharing: Shares(s), app: t.Vms.Any(v => v.App is not null),
            pageCache: t.Vms.Any(v => v.PageCachePages > 0 || v.PageCacheDroppedPages > 0));
        foreach (VmMeasure m in columns) table.Column(m.Header!, m.Importance);
        var host = new TickHost(t.FreeFrames, t.Sharing.SharedFrames, 0);
        foreach (VmSnapshot v in t.Vms)
            table.Row([v.Name, .. columns.Select(m => VmMeasures.CellOf(m, v, host))]);
        return table.Render(AnsiConsole.Profile.Width, Terminal.Wide, blocksWhenNarrow: false);
    }

    // The end-of-run summary: one table when it fits the width (or with --wide), else one block per VM.
    private static IRenderable SummaryTable(RunTimeline timeline)
    {
        var table = new FittedTable($"summary of {timeline.Scenario.Name} over {timeline.Ticks.LastOrDefault()} ticks")
            .Column("VM", 0).Column("alloc range", 0).Column("alloc end", 0).Column("held end", 0).Column("peak est", 0).Column("frames in", 0)
            .Column("frames out", 0).Column("page-outs", 0).Column("page-ins", 0).Column("demand flt", 0).Column("host stall", 0)
            .Column("ticks low", 0).Column("ticks crit", 0).Column("inj+rec", 0);
        // Columns of the other reclamation mechanisms only where the scenario uses them, so the usual table keeps its shape.
        bool sharing = Shares(timeline.Scenario), reclaims = Order(timeline.Scenario) != Core.Scheduling.Reclamation.Balloon;
        if (reclaims) table.Column("balloon took", 0).Column("host swap", 0);
        if (sharing) table.Column("shared end", 0).Column("cow breaks", 0).Column("image errors", 0);
        // An application's figures at the end (the per-VM record's), where one runs.
        List<VmMeasure> app = timeline.Vms.Any(v => v.App.LastOrDefault() is not null)
            ? VmMeasures.TableColumns(sharing: false, app: true).Where(m => m.Group == MeasureGroup.App).ToList() : [];
        foreach (VmMeasure m in app) table.Column(m.Header!, 0);
        foreach (VmRunSummary v in timeline.Summarize())
        {
            VmTimeline t = timeline.Vm(v.Name);
            table.Row([v.Name, $"{v.MinAllocationPages}-{v.MaxAllocationPages}", $"{v.FinalAllocationPages}", $"{v.FinalHeldFrames}",
                $"{v.PeakActiveEstimatePages}", $"{v.FramesIn}", $"{v.FramesOut}", $"{v.GuestPageOuts}", $"{v.GuestPageIns}",
                $"{v.DemandFaults}", $"{v.HostStalls}", $"{v.LowTicks}", $"{v.CriticalTicks}", $"{v.Markers}",
                .. reclaims ? new[] { $"{t.BalloonInflatedPages}", $"{t.HostSwapOuts.LastOrDefault()}" } : [],
                .. sharing ? new[] { $"{t.SharedPages.LastOrDefault()}", $"{t.CowBreaks.LastOrDefault()}", $"{t.ImageWrongReads}" } : [],
                .. app.Select(m => t.Samples.Count == 0 ? "-" : VmMeasures.CellOf(m, t.Samples[^1], timeline.HostAt(t.Samples.Count - 1)))]);
        }
        return table.Render(AnsiConsole.Profile.Width, Terminal.Wide, blocksWhenNarrow: true);
    }

    // One row per policy: what each cost the guests and the host on the same scenario and seed.
    private static void ShowComparison(List<Summary> runs)
    {
        var table = new Table().Title($"{runs[0].Scenario.Name}, seed {runs[0].Scenario.Seed}: policies compared");
        foreach (string c in new[] { "policy", "guest paging", "page-outs", "page-ins", "host swap", "churn/tick", "low ticks", "crit ticks", "allocations at end" })
            table.AddColumn(new TableColumn(c).RightAligned());
        foreach (Summary r in runs)
        {
            List<VmTotals> vms = r.Data.Vms;
            table.AddRow(r.Data.Policy, $"{vms.Sum(v => (long)v.GuestPaging)}", $"{vms.Sum(v => (long)v.GuestPageOuts)}", $"{vms.Sum(v => (long)v.GuestPageIns)}",
                $"{vms.Sum(v => (long)(v.HostSwapOuts + v.HostSwapIns))}", $"{r.Data.Host.FramesMovedPerTick:0.0}", $"{vms.Sum(v => v.LowTicks)}", $"{vms.Sum(v => v.CriticalTicks)}",
                string.Join(" ", vms.Select(v => $"{v.Name}={v.AllocationEndPages}")));
        }
        AnsiConsole.Write(table);
    }
}
