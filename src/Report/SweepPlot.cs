// Renders a parameter sweep to PNG: one panel per summary figure and swept parameter, the figure's mean
// over seeds against the parameter (one line per combination of the other parameters) with its min-max band.
using ScottPlot;

namespace PageLab.Report;

public static class SweepPlot
{
    public const int PanelWidthPx = 520, PanelHeightPx = 260;

    private static readonly Color[] Palette =
        [Colors.SteelBlue, Colors.DarkOrange, Colors.ForestGreen, Colors.Crimson, Colors.MediumPurple, Colors.SaddleBrown, Colors.HotPink, Colors.Gray];

    /// <summary>Writes the sweep's panels to <paramref name="path"/>: a row per figure, a column per parameter.
    /// <paramref name="rows"/> hold, per run, each parameter's value (a number, bool or text) and each figure
    /// (a number); "seed" tells runs of one point apart and is averaged over.</summary>
    public static PlotImage SavePng(string path, string title, IReadOnlyList<string> parameters, IReadOnlyList<string> figures,
        IReadOnlyList<IReadOnlyDictionary<string, object?>> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        if (parameters.Count == 0 || figures.Count == 0 || rows.Count == 0)
            throw new ArgumentException("a sweep plot needs at least one parameter, one figure and one run", nameof(rows));
        int widthPx = PanelWidthPx * parameters.Count, heightPx = PanelHeightPx * figures.Count + 40;
        var multiplot = new Multiplot();
        multiplot.AddPlots(figures.Count * parameters.Count);
        var layout = new ScottPlot.MultiplotLayouts.Grid(figures.Count, parameters.Count);
        multiplot.Layout = layout;
        for (int f = 0; f < figures.Count; f++)
            for (int p = 0; p < parameters.Count; p++)
                Panel(multiplot.GetPlot(f * parameters.Count + p), parameters, p, figures[f], rows, first: f == 0 && p == 0, title);
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        multiplot.SavePng(path, widthPx, heightPx);
        return new PlotImage(path, widthPx, heightPx, SkiaSharp.SKTypeface.Default.GlyphCount > 0);
    }

    private static readonly string? Sans = new[] { "DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial" }
        .FirstOrDefault(f => SkiaSharp.SKFontManager.Default.FontFamilies.Contains(f));

    private static void Panel(Plot plot, IReadOnlyList<string> parameters, int p, string figure,
        IReadOnlyList<IReadOnlyDictionary<string, object?>> rows, bool first, string title)
    {
        if (Sans is not null) plot.Font.Set(Sans);
        string parameter = parameters[p];
        // The parameter's values: numbers on a numeric axis in order, anything else as evenly spaced labels in the grid's order.
        object?[] values = rows.Select(r => r[parameter]).Distinct().ToArray();
        bool numeric = values.All(v => v is long or double or int);
        object?[] ordered = numeric ? values.OrderBy(v => Convert.ToDouble(v)).ToArray() : values; // text in the order of the grid
        double X(object? v) => numeric ? Convert.ToDouble(v) : Array.IndexOf(ordered, v);
        string[] others = parameters.Where((_, i) => i != p).ToArray();
        var groups = rows.GroupBy(r => string.Join(", ", others.Select(o => $"{o}={r[o]}"))).ToList();
        for (int g = 0; g < groups.Count; g++)
        {
            var points = groups[g].GroupBy(r => r[parameter]).Select(at =>
            {
                double[] ys = at.Select(r => Convert.ToDouble(r[figure] ?? 0.0)).ToArray();
                return (X: X(at.Key), Mean: ys.Average(), Min: ys.Min(), Max: ys.Max());
            }).OrderBy(t => t.X).ToArray();
            Color color = Palette[g % Palette.Length];
            double[] xs = points.Select(t => t.X).ToArray();
            if (points.Any(t => t.Max > t.Min))
            {
                var band = plot.Add.FillY(xs, points.Select(t => t.Min).ToArray(), points.Select(t => t.Max).ToArray());
                band.FillStyle.Color = color.WithAlpha(0.2);
                band.LineStyle.Width = 0;
            }
            var mean = plot.Add.Scatter(xs, points.Select(t => t.Mean).ToArray(), color);
            mean.LineWidth = 2;
            mean.MarkerSize = 6;
            if (others.Length > 0 && groups.Count <= 8) mean.LegendText = groups[g].Key;
        }
        if (!numeric) plot.Axes.Bottom.SetTicks(ordered.Select((_, i) => (double)i).ToArray(), ordered.Select(v => $"{v}").ToArray());
        plot.Axes.Bottom.Label.Text = parameter;
        plot.Axes.Left.Label.Text = figure;
        plot.Axes.Title.Label.Text = first ? $"{title}: mean over seeds, band from min to max" : "";
        plot.Axes.Title.Label.FontSize = 12;
        if (others.Length > 0 && groups.Count <= 8)
        {
            plot.ShowLegend(Alignment.UpperRight);
            plot.Legend.FontSize = 9;
        }
        else plot.Legend.IsVisible = false;
    }
}
