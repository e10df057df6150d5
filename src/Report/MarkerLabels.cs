// Labels of a timeline's event markers (injections, recoveries): a short text per marker and rows to put
// them in so no two overlap; a label that finds no free row is left out (the trace has every detail).
using PageLab.Lab.Observation;

namespace PageLab.Report;

/// <summary>Where one label goes: its row (0 at the top; -1 when left out) and the pixels it spans; it ends
/// at its marker line rather than starting there when it would pass the panel's right edge.</summary>
public readonly record struct LabelSlot(int Row, double StartPx, double EndPx)
{
    public bool Shown => Row >= 0;
}

public static class MarkerLabels
{
    /// <summary>A marker's label: "MultiBit error" for an injection, "recovered" or "contained" for a
    /// recovery (the first word of its detail), at most 20 characters.</summary>
    public static string Short(RunEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        string first = (e.Detail ?? "").Split(' ', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault()?.TrimEnd(':', ',', '.') ?? "";
        string text = e.Kind switch
        {
            RunEventKind.Injection => first.Length == 0 ? "error" : $"{first} error",
            RunEventKind.Recovery => first.Length == 0 ? "recovery" : first.ToLowerInvariant(),
            _ => first.Length == 0 ? $"{e.Kind}".ToLowerInvariant() : first,
        };
        return text.Length <= 20 ? text : $"{text[..19]}…";
    }

    /// <summary>Rows for labels of the given pixel positions and widths (in marker order), inside a panel
    /// <paramref name="areaWidthPx"/> wide: each label starts at its line, or ends at it when it would pass
    /// the right edge; it takes the first row where it keeps <paramref name="gapPx"/> from the row's labels.
    /// Invariants: in a row, labels do not overlap; every shown label lies inside [0, areaWidthPx] when it
    /// is not wider than the area; at most <paramref name="maxRows"/> rows.</summary>
    public static List<LabelSlot> Place(IReadOnlyList<(double XPx, double WidthPx)> labels, double areaWidthPx, int maxRows, double gapPx = 4)
    {
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxRows, 1);
        var rows = new List<List<(double Start, double End)>>();
        for (int r = 0; r < maxRows; r++) rows.Add(new());
        var slots = new List<LabelSlot>(labels.Count);
        foreach ((double x, double w) in labels)
        {
            double start = x + w <= areaWidthPx ? x : x - w;
            start = Math.Max(0, start);
            double end = start + w;
            int row = -1;
            for (int r = 0; r < maxRows && row < 0; r++)
                if (rows[r].All(o => end + gapPx <= o.Start || start >= o.End + gapPx)) row = r;
            if (row >= 0) rows[row].Add((start, end));
            slots.Add(new LabelSlot(row, start, end));
        }
        return slots;
    }
}
