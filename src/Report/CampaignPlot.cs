// Renders an error campaign to PNG: errors handled so far by outcome (recovered, contained, lost) over
// the injections, and how long each report took to handle.
using PageLab.Core.Recovery;
using ScottPlot;
using PageLab.Lab.Campaigns;

namespace PageLab.Report;

public static class CampaignPlot
{
    public static PlotImage SavePng(CampaignResult result, string path, int widthPx = 1200, int heightPx = 700)
    {
        ArgumentNullException.ThrowIfNull(result);
        if (result.Samples.Count == 0) throw new ArgumentException("the campaign has no injections to plot", nameof(result));
        string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);

        var multiplot = new Multiplot();
        multiplot.AddPlots(2);
        Plot counts = multiplot.GetPlot(0), latency = multiplot.GetPlot(1);
        double[] x = result.Samples.Select(s => (double)s.Index + 1).ToArray();
        Cumulative(counts, x, result.Samples.Select(s => !s.Lost && s.Outcome != ErrorOutcome.Contained), Colors.SeaGreen, "recovered");
        Cumulative(counts, x, result.Samples.Select(s => !s.Lost && s.Outcome == ErrorOutcome.Contained), Colors.DarkOrange, "contained");
        Cumulative(counts, x, result.Samples.Select(s => s.Lost), Colors.Red, "lost");
        counts.Title($"{result.Injected} injected errors: {result.Recovered} recovered, {result.Contained} contained, {result.Lost} lost");
        counts.YLabel("errors handled");
        counts.ShowLegend(Alignment.UpperLeft);

        foreach (ErrorOutcome outcome in Enum.GetValues<ErrorOutcome>())
        {
            CampaignSample[] of = result.Samples.Where(s => s.Outcome == outcome).ToArray();
            if (of.Length == 0) continue;
            var points = latency.Add.ScatterPoints(of.Select(s => (double)s.Index + 1).ToArray(), of.Select(s => Math.Log10(Math.Max(0.1, s.Micros))).ToArray());
            points.MarkerSize = 2;
            points.LegendText = Words(outcome);
        }
        latency.Title($"report to handled: p50 {result.P50Micros:0.0} µs, p90 {result.P90Micros:0.0} µs, p99 {result.P99Micros:0.0} µs");
        latency.YLabel("log10 µs");
        latency.XLabel("injection");
        latency.ShowLegend(Alignment.UpperRight);
        multiplot.SharedAxes.ShareX(multiplot.GetPlots());
        multiplot.SavePng(path, widthPx, heightPx);
        return new PlotImage(path, widthPx, heightPx, SkiaSharp.SKTypeface.Default.GlyphCount > 0);
    }

    /// <summary>An outcome in words, for legends and tables ("parity frame rebuilt", not ParityRebuilt).</summary>
    public static string Words(ErrorOutcome outcome) => outcome switch
    {
        ErrorOutcome.Recovered => "page recovered",
        ErrorOutcome.ParityRebuilt => "parity frame rebuilt",
        ErrorOutcome.FreeFrameRetired => "free frame retired",
        ErrorOutcome.Contained => "contained (context ended)",
        _ => outcome.ToString(),
    };

    /// <summary>Where a campaign's error hit, in words ("read-mostly page", not ReadMostlyPage).</summary>
    public static string Words(CampaignTarget target) => target switch
    {
        CampaignTarget.ReadMostlyPage => "read-mostly page (parity)",
        CampaignTarget.WrittenPage => "written page (parity)",
        CampaignTarget.DiskPage => "clean page with a disk copy",
        CampaignTarget.SilentPage => "page found by the scrubber",
        CampaignTarget.UnprotectedPage => "unprotected page",
        CampaignTarget.ParityFrame => "parity frame",
        CampaignTarget.FreeFrame => "free frame",
        _ => target.ToString(),
    };

    private static void Cumulative(Plot plot, double[] x, IEnumerable<bool> hits, Color color, string label)
    {
        long n = 0;
        double[] y = hits.Select(h => (double)(h ? ++n : n)).ToArray();
        var line = plot.Add.ScatterLine(x, y, color);
        line.LegendText = label;
        line.MarkerSize = 0;
        line.LineWidth = 2;
    }
}
