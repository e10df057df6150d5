// Renders a run's timeline to PNG with ScottPlot: one panel per VM over ticks (host frames held, allocation,
// balloon target and actual, working set, guest page-outs, condition level shading, event markers).
using PageLab.Core.Condition;
using PageLab.Core.Scenarios;
using ScottPlot;

namespace PageLab.Report;

/// <summary>A PNG written by <see cref="TimelinePlot.SavePng"/>, with its size in pixels. <paramref name="HasText"/>
/// is false when the machine has no font (Debian: fonts-dejavu-core): lines are drawn, labels are not.</summary>
public sealed record PlotImage(string Path, int WidthPx, int HeightPx, bool HasText);

public static class TimelinePlot
{
    public const int DefaultWidthPx = 1200, DefaultPanelHeightPx = 300;

    private static readonly Color Held = Colors.SteelBlue, Allocation = Colors.Black, Target = Colors.DarkOrange,
        Actual = Colors.Chocolate, Active = Colors.ForestGreen, PageOuts = Colors.Purple, Low = Colors.Gold, Critical = Colors.Red,
        Injection = Colors.Crimson, Recovery = Colors.Teal;

    /// <summary>Writes <paramref name="timeline"/> to <paramref name="path"/> (directories created):
    /// <paramref name="widthPx"/> wide, <paramref name="panelHeightPx"/> high per VM.</summary>
    public static PlotImage SavePng(RunTimeline timeline, string path, int widthPx = DefaultWidthPx, int panelHeightPx = DefaultPanelHeightPx)
    {
        ArgumentNullException.ThrowIfNull(timeline);
        if (widthPx is < 200 or > 10_000) throw new ArgumentOutOfRangeException(nameof(widthPx), widthPx, $"width must be 200..10000 px, got {widthPx}");
        if (panelHeightPx is < 100 or > 5_000)
            throw new ArgumentOutOfRangeException(nameof(panelHeightPx), panelHeightPx, $"panel height must be 100..5000 px, got {panelHeightPx}");
        if (timeline.Ticks.Count == 0) throw new ArgumentException($"timeline of '{timeline.Scenario.Name}' has no ticks to plot", nameof(timeline));
        int heightPx = panelHeightPx * timeline.Vms.Count;
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);

        var multiplot = new Multiplot();
        multiplot.AddPlots(timeline.Vms.Count);
        double[] ticks = timeline.Ticks.Select(t => (double)t).ToArray();
        for (int i = 0; i < timeline.Vms.Count; i++)
            Panel(multiplot.GetPlot(i), timeline, timeline.Vms[i], ticks, first: i == 0, last: i == timeline.Vms.Count - 1);
        multiplot.SharedAxes.ShareX(multiplot.GetPlots());
        multiplot.SavePng(path, widthPx, heightPx);
        return new PlotImage(path, widthPx, heightPx, SkiaSharp.SKTypeface.Default.GlyphCount > 0);
    }

    // A sans-serif family the machine has, if any (Skia's default is often a serif face).
    private static readonly string? Sans = new[] { "DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial" }
        .FirstOrDefault(f => SkiaSharp.SKFontManager.Default.FontFamilies.Contains(f));

    private static void Panel(Plot plot, RunTimeline timeline, VmTimeline vm, double[] ticks, bool first, bool last)
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

        foreach (RunEvent m in timeline.Markers.Where(m => m.Vm is null || m.Vm == vm.Name))
        {
            var line = plot.Add.VerticalLine(m.Tick, 2, m.Kind == RunEventKind.Injection ? Injection : Recovery, LinePattern.Solid);
            line.LabelText = m.Detail is null ? $"{m.Kind}" : $"{m.Kind}: {m.Detail}";
            line.LabelOppositeAxis = true;
        }

        plot.Axes.Left.Label.Text = "pages";
        plot.Axes.Title.Label.Text = first
            ? $"{s.Name}: {vm.Name} ({vm.Pages} guest pages) · host {s.HostPages} pages · seed {s.Seed} · policy {s.PolicyName}"
            : $"{vm.Name} ({vm.Pages} guest pages)";
        plot.Axes.Title.Label.FontSize = 14;
        plot.Axes.Title.Label.Bold = true;
        plot.Axes.SetLimitsX(0, Math.Max(1, ticks[^1]));
        plot.Axes.SetLimitsY(0, vm.Pages * 1.05, plot.Axes.Left);
        plot.Axes.SetLimitsY(0, Math.Max(10, vm.GuestPageOuts.LastOrDefault() * 1.1), plot.Axes.Right);
        if (last) plot.Axes.Bottom.Label.Text = "tick";
        if (first)
        {
            plot.ShowLegend(Edge.Top);
            plot.Legend.FontSize = 11;
        }
        else plot.Legend.IsVisible = false;
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
