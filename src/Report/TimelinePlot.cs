// Renders a run's timeline to PNG with ScottPlot: one panel per VM over ticks (host frames held, allocation,
// balloon target and actual, working set, guest page-outs, condition level shading, event markers).
using PageLab.Core.Condition;
using ScottPlot;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Report;

/// <summary>A PNG written by <see cref="TimelinePlot.SavePng"/>, with its size in pixels. <paramref name="HasText"/>
/// is false when the machine has no font (Debian: fonts-dejavu-core): lines are drawn, labels are not.</summary>
public sealed record PlotImage(string Path, int WidthPx, int HeightPx, bool HasText);

public static class TimelinePlot
{
    public const int DefaultWidthPx = 1200, DefaultPanelHeightPx = 300;

    private static readonly Color Held = Colors.SteelBlue, Allocation = Colors.Black, Target = Colors.DarkOrange,
        Actual = Colors.Chocolate, Active = Colors.ForestGreen, PageOuts = Colors.Purple, Low = Colors.Gold, Critical = Colors.Red,
        Injection = Colors.Crimson, Recovery = Colors.Teal, Cache = Colors.SlateGray, Refaults = Colors.DeepPink, Writebacks = Colors.Olive;

    /// <summary>Writes <paramref name="timeline"/> to <paramref name="path"/> (directories created):
    /// <paramref name="widthPx"/> wide, <paramref name="panelHeightPx"/> high per VM.</summary>
    public static PlotImage SavePng(RunTimeline timeline, string path, int widthPx = DefaultWidthPx, int panelHeightPx = DefaultPanelHeightPx)
    {
        ArgumentNullException.ThrowIfNull(timeline);
        if (widthPx is < 200 or > 10_000) throw new ArgumentOutOfRangeException(nameof(widthPx), widthPx, $"width must be 200..10000 px, got {widthPx}");
        if (panelHeightPx is < 100 or > 5_000)
            throw new ArgumentOutOfRangeException(nameof(panelHeightPx), panelHeightPx, $"panel height must be 100..5000 px, got {panelHeightPx}");
        if (timeline.Ticks.Count == 0) throw new ArgumentException($"timeline of '{timeline.Scenario.Name}' has no ticks to plot", nameof(timeline));
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        if (timeline.Vms.Count > MaxFullPanels) return SaveGrid(timeline, path, widthPx);
        // A VM's panel, then, for a VM with an application, its application's panel below it.
        List<(VmTimeline Vm, bool App)> panels = timeline.Vms
            .SelectMany(v => HasApp(timeline, v) ? new[] { (v, false), (v, true) } : [(v, false)]).ToList();
        int heightPx = panelHeightPx * panels.Count;

        var multiplot = new Multiplot();
        multiplot.AddPlots(panels.Count);
        double[] ticks = timeline.Ticks.Select(t => (double)t).ToArray();
        for (int i = 0; i < panels.Count; i++)
        {
            if (panels[i].App) AppPanel(multiplot.GetPlot(i), timeline, panels[i].Vm, ticks, last: i == panels.Count - 1);
            else Panel(multiplot.GetPlot(i), timeline, panels[i].Vm, ticks, first: i == 0, last: i == panels.Count - 1, DataWidthPx(widthPx));
        }
        multiplot.SharedAxes.ShareX(multiplot.GetPlots());
        multiplot.SavePng(path, widthPx, heightPx);
        return new PlotImage(path, widthPx, heightPx, SkiaSharp.SKTypeface.Default.GlyphCount > 0);
    }

    /// <summary>Most VMs drawn as one full panel each; more get a grid of small panels under an overview.</summary>
    public const int MaxFullPanels = 6;

    /// <summary>Columns of the small-panel grid, and the height of one small panel and of the overview.</summary>
    public const int GridColumns = 4, SmallPanelHeightPx = 200, OverviewHeightPx = 400;

    // More than MaxFullPanels VMs: an overview (every VM's allocation stacked, host pages as a line) over a
    // grid of small panels, one per VM (frames held, allocation, balloon, condition, unlabelled markers).
    private static PlotImage SaveGrid(RunTimeline timeline, string path, int widthPx)
    {
        Scenario s = timeline.Scenario;
        int n = timeline.Vms.Count, gridRows = (n + GridColumns - 1) / GridColumns;
        // The overview spans two grid rows.
        int rows = gridRows + OverviewHeightPx / SmallPanelHeightPx, heightPx = rows * SmallPanelHeightPx;
        double[] ticks = timeline.Ticks.Select(t => (double)t).ToArray();
        var multiplot = new Multiplot();
        multiplot.AddPlots(n + 1);
        var layout = new ScottPlot.MultiplotLayouts.CustomGrid();
        Plot overview = multiplot.GetPlot(0);
        layout.Set(overview, new GridCell(0, 0, rows, GridColumns, OverviewHeightPx / SmallPanelHeightPx, GridColumns));
        Overview(overview, timeline, ticks);
        for (int i = 0; i < n; i++)
        {
            Plot small = multiplot.GetPlot(i + 1);
            layout.Set(small, new GridCell(OverviewHeightPx / SmallPanelHeightPx + i / GridColumns, i % GridColumns, rows, GridColumns, 1, 1));
            SmallPanel(small, timeline, timeline.Vms[i], ticks);
        }
        multiplot.Layout = layout;
        multiplot.SharedAxes.ShareX(multiplot.GetPlots().Skip(1));
        multiplot.SavePng(path, widthPx, heightPx);
        return new PlotImage(path, widthPx, heightPx, SkiaSharp.SKTypeface.Default.GlyphCount > 0);
    }

    private static readonly Color[] Palette =
    [
        Colors.SteelBlue, Colors.DarkOrange, Colors.ForestGreen, Colors.Crimson, Colors.MediumPurple, Colors.SaddleBrown,
        Colors.HotPink, Colors.Gray, Colors.Olive, Colors.DarkCyan,
    ];

    // Every VM's allocation stacked (VM 1 at the bottom), so the stack's top is what the scheduler shared out.
    private static void Overview(Plot plot, RunTimeline timeline, double[] ticks)
    {
        Scenario s = timeline.Scenario;
        if (Sans is not null) plot.Font.Set(Sans);
        var cumulative = new double[timeline.Vms.Count][];
        double[] sum = new double[ticks.Length];
        for (int i = 0; i < timeline.Vms.Count; i++)
        {
            for (int t = 0; t < ticks.Length; t++) sum[t] += timeline.Vms[i].AllocationPages[t];
            cumulative[i] = (double[])sum.Clone();
        }
        // Drawn from the top of the stack down, each filled to zero in an opaque colour, so each band shows one VM.
        for (int i = timeline.Vms.Count - 1; i >= 0; i--)
        {
            var band = plot.Add.ScatterLine(ticks, cumulative[i], Palette[i % Palette.Length]);
            band.FillY = true;
            band.FillYColor = Palette[i % Palette.Length].Lighten(0.3 + 0.4 * (i / Palette.Length % 2));
            band.LineWidth = 1;
            if (timeline.Vms.Count <= 16) band.LegendText = timeline.Vms[i].Name;
        }
        var host = plot.Add.HorizontalLine(s.HostPages, 2, Colors.Black, LinePattern.Dashed);
        host.LegendText = "host pages";
        plot.Axes.Title.Label.Text = $"{s.Name}: allocation of every VM, stacked ({timeline.Vms.Count} VMs, first at the bottom) · host {s.HostPages} pages · seed {s.Seed} · " +
                                     (s.Adaptive ? "scheduler on" : "static allocations");
        plot.Axes.Title.Label.FontSize = 14;
        plot.Axes.Title.Label.Bold = true;
        plot.Axes.Left.Label.Text = "pages";
        plot.Axes.Bottom.Label.Text = "tick · below, per VM: host frames held (blue), allocation (dotted), balloon actual (orange), " +
                                      "condition low / critical (yellow / red), errors and recoveries (vertical lines; details in the trace)";
        plot.Axes.Bottom.Label.FontSize = 11;
        plot.Axes.SetLimitsX(0, Math.Max(1, ticks[^1]));
        plot.Axes.SetLimitsY(0, Math.Max(s.HostPages, sum.DefaultIfEmpty(0).Max()) * 1.05);
        plot.ShowLegend(Edge.Right);
        plot.Legend.FontSize = 9;
    }

    // One VM in a small panel: frames held, allocation, balloon actual and condition shading; marker lines
    // without labels (the trace has their text).
    private static void SmallPanel(Plot plot, RunTimeline timeline, VmTimeline vm, double[] ticks)
    {
        if (Sans is not null) plot.Font.Set(Sans);
        ShadeConditions(plot, vm, ticks);
        Line(plot, ticks, vm.HeldFrames.Select(x => (double)x), Held, "host frames held", LinePattern.Solid, 1.5f);
        Line(plot, ticks, vm.AllocationPages.Select(x => (double)x), Allocation, "allocation", LinePattern.Dotted, 1);
        Line(plot, ticks, vm.BalloonActualPages.Select(x => (double)x), Actual, "balloon actual", LinePattern.Solid, 1);
        Markers(plot, timeline, vm, ticks, 0, labelled: false);
        int errors = timeline.Markers.Count(m => m.Vm == vm.Name && m.Kind == RunEventKind.Injection);
        plot.Axes.Title.Label.Text = $"{vm.Name} ({vm.Pages} pages{(errors > 0 ? $", {errors} error{(errors == 1 ? "" : "s")}" : "")})";
        plot.Axes.Title.Label.FontSize = 11;
        plot.Axes.Bottom.TickLabelStyle.FontSize = 9;
        plot.Axes.Left.TickLabelStyle.FontSize = 9;
        plot.Axes.SetLimitsX(0, Math.Max(1, ticks[^1]));
        plot.Axes.SetLimitsY(0, vm.Pages * 1.05);
        plot.Legend.IsVisible = false;
    }

    // A sans-serif family the machine has, if any (Skia's default is often a serif face).
    private static readonly string? Sans = new[] { "DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial" }
        .FirstOrDefault(f => SkiaSharp.SKFontManager.Default.FontFamilies.Contains(f));

    private static void Panel(Plot plot, RunTimeline timeline, VmTimeline vm, double[] ticks, bool first, bool last, float areaWidthPx)
    {
        Scenario s = timeline.Scenario;
        if (Sans is not null) plot.Font.Set(Sans);
        ShadeConditions(plot, vm, ticks);
        Line(plot, ticks, vm.HeldFrames.Select(x => (double)x), Held, "host frames held", LinePattern.Solid, 2);
        Line(plot, ticks, vm.AllocationPages.Select(x => (double)x), Allocation, "allocation", LinePattern.Dotted, 1);
        Line(plot, ticks, vm.BalloonTargetPages.Select(x => (double)x), Target, "balloon target", LinePattern.Dashed, 1.5f);
        Line(plot, ticks, vm.BalloonActualPages.Select(x => (double)x), Actual, "balloon actual", LinePattern.Solid, 1.5f);
        Line(plot, ticks, vm.ActiveEstimatePages.Select(x => (double)x), Active, "active WS estimate", LinePattern.Solid, 1.5f);

        var outs = plot.Add.ScatterLine(ticks, vm.GuestPageOuts.Select(x => (double)x).ToArray(), PageOuts);
        outs.LegendText = "guest page-outs (right)";
        outs.LineWidth = 1.5f;
        outs.Axes.YAxis = plot.Axes.Right;
        plot.Axes.Right.Label.Text = "page-outs";
        double rightMax = vm.GuestPageOuts.LastOrDefault();
        // The guest's page cache, only where a guest has one (so other runs' plots keep their legend).
        if (vm.PageCachePages.Any(x => x > 0) || vm.PageCacheDroppedPages.Any(x => x > 0))
        {
            Line(plot, ticks, vm.PageCachePages.Select(x => (double)x), Cache, "page cache", LinePattern.Solid, 1.5f);
            foreach ((IReadOnlyList<ulong> series, Color color, string label) in new (IReadOnlyList<ulong>, Color, string)[]
                     {
                         (vm.PageCacheDroppedPages, Cache, "cache dropped (right)"), (vm.PageCacheRefaults, Refaults, "cache refaults (right)"),
                         (vm.DirtyWritebacks, Writebacks, "dirty writebacks (right)"),
                     })
            {
                var counts = plot.Add.ScatterLine(ticks, series.Select(x => (double)x).ToArray(), color);
                counts.LegendText = label;
                counts.LinePattern = LinePattern.Dashed;
                counts.LineWidth = 1;
                counts.Axes.YAxis = plot.Axes.Right;
                rightMax = Math.Max(rightMax, series.LastOrDefault());
            }
            plot.Axes.Right.Label.Text = "page-outs, cache counts";
        }

        Markers(plot, timeline, vm, ticks, areaWidthPx, labelled: true);

        plot.Axes.Left.Label.Text = "pages";
        plot.Axes.Title.Label.Text = first
            ? $"{s.Name}: {vm.Name} ({vm.Pages} guest pages) · host {s.HostPages} pages · seed {s.Seed} · policy {s.PolicyName}"
            : $"{vm.Name} ({vm.Pages} guest pages)";
        plot.Axes.Title.Label.FontSize = 14;
        plot.Axes.Title.Label.Bold = true;
        plot.Axes.SetLimitsX(0, Math.Max(1, ticks[^1]));
        plot.Axes.SetLimitsY(0, vm.Pages * 1.05, plot.Axes.Left);
        plot.Axes.SetLimitsY(0, Math.Max(10, rightMax * 1.1), plot.Axes.Right);
        if (last) plot.Axes.Bottom.Label.Text = "tick";
        if (first)
        {
            plot.ShowLegend(Edge.Top);
            plot.Legend.FontSize = 11;
        }
        else plot.Legend.IsVisible = false;
    }

    // The plotted figures of the per-VM record (VmMeasures: VmMeasure.Plot), for VMs that have them.
    private static readonly VmMeasure[] Plotted = VmMeasures.All.Where(m => m.Plot).ToArray();

    private static bool HasApp(RunTimeline timeline, VmTimeline vm) =>
        Plotted.Any(m => timeline.Series(vm, m).Any(x => x is not null));

    private static readonly Color[] AppColors = [Colors.DarkGreen, Colors.SlateBlue, Colors.DarkRed, Colors.Olive];

    // A VM's application: each plotted figure of the record, a total as its change per tick on the left axis
    // (transactions per tick), a level on the right (heap bytes), with the VM's condition shading behind.
    private static void AppPanel(Plot plot, RunTimeline timeline, VmTimeline vm, double[] ticks, bool last)
    {
        if (Sans is not null) plot.Font.Set(Sans);
        ShadeConditions(plot, vm, ticks);
        double leftMax = 1, rightMax = 1;
        for (int k = 0; k < Plotted.Length; k++)
        {
            VmMeasure m = Plotted[k];
            double?[] series = timeline.Series(vm, m);
            if (series.All(x => x is null)) continue;
            double[] ys = m.Kind == MeasureKind.Total
                ? series.Select((x, i) => i == 0 ? 0 : Math.Max(0, (x ?? 0) - (series[i - 1] ?? 0))).ToArray()
                : series.Select(x => x ?? 0).ToArray();
            var line = plot.Add.ScatterLine(ticks, ys, AppColors[k % AppColors.Length]);
            line.LineWidth = 1.5f;
            line.LegendText = m.Kind == MeasureKind.Total ? $"{m.Name} per tick" : $"{m.Name} (right)";
            if (m.Kind == MeasureKind.Level)
            {
                line.Axes.YAxis = plot.Axes.Right;
                rightMax = Math.Max(rightMax, ys.Max());
            }
            else leftMax = Math.Max(leftMax, ys.Max());
        }
        // Axis labels from the figures' units ("{transaction}" -> transactions, "By" -> bytes).
        static string Unit(VmMeasure m) => m.Unit == "By" ? "bytes" : m.Unit.Trim('{', '}') + "s";
        plot.Axes.Left.Label.Text = string.Join(", ", Plotted.Where(m => m.Kind == MeasureKind.Total).Select(Unit).Distinct()) + " per tick";
        plot.Axes.Right.Label.Text = string.Join(", ", Plotted.Where(m => m.Kind == MeasureKind.Level).Select(Unit).Distinct());
        plot.Axes.Title.Label.Text = Plotted.All(m => m.Group == MeasureGroup.App) ? $"{vm.Name}: its application" : $"{vm.Name}: its figures";
        plot.Axes.Title.Label.FontSize = 14;
        plot.Axes.Title.Label.Bold = true;
        plot.Axes.SetLimitsX(0, Math.Max(1, ticks[^1]));
        plot.Axes.SetLimitsY(0, leftMax * 1.1, plot.Axes.Left);
        plot.Axes.SetLimitsY(0, rightMax * 1.1, plot.Axes.Right);
        if (last) plot.Axes.Bottom.Label.Text = "tick";
        plot.ShowLegend(Edge.Top);
        plot.Legend.FontSize = 11;
    }

    /// <summary>Most rows of marker labels a panel stacks before it leaves labels out.</summary>
    public const int MaxLabelRows = 3;

    private const float LabelFontSize = 11;

    // The width of a panel's data area: the figure's width less its left and right axes (a little less
    // than ScottPlot gives it, so labels laid out in it never reach the axes).
    private static float DataWidthPx(int widthPx) => widthPx - 150;

    // A marker line per injection and recovery of this VM; with labels, their short texts stacked in rows
    // from the top of the panel so that none overlaps another (a label with no free row is left out).
    private static void Markers(Plot plot, RunTimeline timeline, VmTimeline vm, double[] ticks, float areaWidthPx, bool labelled)
    {
        RunEvent[] markers = timeline.Markers.Where(m => m.Vm is null || m.Vm == vm.Name).ToArray();
        foreach (RunEvent m in markers)
            plot.Add.VerticalLine(m.Tick, labelled ? 2 : 1, m.Kind == RunEventKind.Injection ? Injection : Recovery, LinePattern.Solid);
        if (!labelled || markers.Length == 0) return;
        double span = Math.Max(1, ticks[^1]);
        string[] texts = markers.Select(MarkerLabels.Short).ToArray();
        List<LabelSlot> slots = MarkerLabels.Place(
            markers.Select((m, i) => (m.Tick / span * areaWidthPx, (double)TextWidthPx(texts[i]) + 6)).ToList(), areaWidthPx, MaxLabelRows);
        for (int i = 0; i < markers.Length; i++)
        {
            if (!slots[i].Shown) continue;
            bool leftOfLine = slots[i].EndPx <= markers[i].Tick / span * areaWidthPx + 0.5;
            var text = plot.Add.Text(texts[i], markers[i].Tick, vm.Pages * 1.05);
            text.Alignment = leftOfLine ? Alignment.UpperRight : Alignment.UpperLeft;
            text.OffsetX = leftOfLine ? -3 : 3;
            text.OffsetY = 3 + slots[i].Row * (LabelFontSize + 5);
            text.LabelFontSize = LabelFontSize;
            text.LabelFontColor = markers[i].Kind == RunEventKind.Injection ? Injection : Recovery;
            if (Sans is not null) text.LabelFontName = Sans;
        }
    }

    // A label's width in pixels in the font the plot uses (an estimate when the machine has no font).
    private static float TextWidthPx(string text)
    {
        using SkiaSharp.SKTypeface? face = Sans is null ? null : SkiaSharp.SKTypeface.FromFamilyName(Sans);
        if (face is null || face.GlyphCount == 0) return text.Length * LabelFontSize * 0.65f;
        using var font = new SkiaSharp.SKFont(face, LabelFontSize);
        return font.MeasureText(text);
    }

    private static void Line(Plot plot, double[] xs, IEnumerable<double> ys, Color color, string label, LinePattern pattern, float width)
    {
        var line = plot.Add.ScatterLine(xs, ys.ToArray(), color);
        line.LegendText = label;
        line.LinePattern = pattern;
        line.LineWidth = width;
    }

    // Low and Critical stretches as background bands (Plenty is left clear).
    private static void ShadeConditions(Plot plot, VmTimeline vm, double[] ticks)
    {
        bool lowLabelled = false, criticalLabelled = false;
        int start = 0;
        for (int i = 1; i <= vm.Condition.Count; i++)
        {
            if (i < vm.Condition.Count && vm.Condition[i] == vm.Condition[start]) continue;
            MemoryLevel level = vm.Condition[start];
            if (level != MemoryLevel.Plenty)
            {
                double from = ticks[start] - 0.5, to = (i < ticks.Length ? ticks[i] : ticks[^1]) - 0.5;
                var span = plot.Add.HorizontalSpan(from, to, (level == MemoryLevel.Low ? Low : Critical).WithAlpha(0.15));
                span.LineWidth = 0;
                ref bool labelled = ref level == MemoryLevel.Low ? ref lowLabelled : ref criticalLabelled;
                if (!labelled) span.LegendText = $"condition {level}";
                labelled = true;
            }
            start = i;
        }
    }
}
