// Renders `run --compare` to PNG with ScottPlot: the same scenario and seed under several allocation
// policies, side by side (guest paging, host swapping, ticks in low or critical condition, allocations).
using ScottPlot;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Report;

public static class ComparisonPlot
{
    /// <summary>Writes one panel per figure, one bar (group) per policy, to <paramref name="path"/>.</summary>
    public static PlotImage SavePng(IReadOnlyList<RunSummary> runs, string path, int widthPx = 1200)
    {
        ArgumentNullException.ThrowIfNull(runs);
        if (runs.Count == 0) throw new ArgumentException("no runs to compare", nameof(runs));
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        var multiplot = new Multiplot();
        multiplot.AddPlots(4);
        string[] policies = runs.Select(r => r.Policy).ToArray();
        Bars(multiplot.GetPlot(0), policies, "guest paging (page-outs + page-ins)", runs.Select(r => (double)r.Vms.Sum(v => (long)v.GuestPaging)).ToArray());
        Bars(multiplot.GetPlot(1), policies, "host swapping (outs + ins)", runs.Select(r => (double)r.Vms.Sum(v => (long)(v.HostSwapOuts + v.HostSwapIns))).ToArray());
        Bars(multiplot.GetPlot(2), policies, "VM ticks in low or critical condition", runs.Select(r => (double)r.Vms.Sum(v => v.LowTicks + v.CriticalTicks)).ToArray());
        Allocations(multiplot.GetPlot(3), runs);
        multiplot.GetPlot(0).Title($"{runs[0].Scenario}, seed {runs[0].Seed}, {runs[0].TicksRun} ticks");
        int heightPx = 4 * 260;
        multiplot.SavePng(path, widthPx, heightPx);
        return new PlotImage(path, widthPx, heightPx, SkiaSharp.SKTypeface.Default.GlyphCount > 0);
    }

    private static void Bars(Plot plot, string[] policies, string what, double[] values)
    {
        var bars = plot.Add.Bars(values);
        for (int i = 0; i < bars.Bars.Count; i++)
        {
            bars.Bars[i].Label = $"{values[i]:0}";
            bars.Bars[i].FillColor = Palette(i);
        }
        bars.ValueLabelStyle.FontSize = 12;
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, policies.Length).Select(i => (double)i).ToArray(), policies);
        plot.Axes.Left.Label.Text = what;
        plot.Axes.Margins(bottom: 0, top: 0.2);
    }

    // Each VM's allocation at the end, grouped by VM, one bar per policy.
    private static void Allocations(Plot plot, IReadOnlyList<RunSummary> runs)
    {
        string[] vms = runs[0].Vms.Select(v => v.Name).ToArray();
        int n = runs.Count;
        var list = new List<Bar>();
        for (int vm = 0; vm < vms.Length; vm++)
            for (int p = 0; p < n; p++)
                list.Add(new Bar
                {
                    Position = vm * (n + 1) + p,
                    Value = runs[p].Vms.FirstOrDefault(v => v.Name == vms[vm])?.AllocationEndPages ?? 0,
                    FillColor = Palette(p),
                });
        plot.Add.Bars(list);
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, vms.Length).Select(vm => vm * (n + 1) + (n - 1) / 2.0).ToArray(), vms);
        plot.Axes.Left.Label.Text = "allocation at the end (pages)";
        for (int p = 0; p < n; p++) plot.Legend.ManualItems.Add(new LegendItem { LabelText = runs[p].Policy, FillColor = Palette(p) });
        plot.ShowLegend(Alignment.UpperRight);
        plot.Axes.Margins(bottom: 0, top: 0.2);
    }

    private static Color Palette(int i) => new ScottPlot.Palettes.Category10().GetColor(i);
}
