// How wide the output for people may be (COLUMNS, the terminal's width, or 160 when redirected; `--wide`
// lifts the limit) and tables fitted to it: all columns when they fit, else fewer, else one block per row.
using Spectre.Console;
using Spectre.Console.Rendering;

namespace PageLab.Cli;

internal static class Terminal
{
    /// <summary>Width used when output is redirected and COLUMNS is not set (logs and CI keep whole tables).</summary>
    public const int RedirectedWidth = 160;

    /// <summary>Narrowest width tables are fitted to (a smaller COLUMNS is taken as this).</summary>
    public const int MinWidth = 40;

    /// <summary>True when `--wide` asked for every column whatever the width.</summary>
    public static bool Wide { get; set; }

    /// <summary>The width output for people should fit: COLUMNS when set to a number, else the terminal's
    /// width, else <see cref="RedirectedWidth"/> for output that is not a terminal.</summary>
    public static int Width(bool redirected)
    {
        if (int.TryParse(Environment.GetEnvironmentVariable("COLUMNS"), out int columns) && columns > 0) return Math.Max(MinWidth, columns);
        if (redirected) return RedirectedWidth;
        try
        {
            return Console.WindowWidth > 0 ? Math.Max(MinWidth, Console.WindowWidth) : 80;
        }
        catch (IOException)
        {
            return 80; // no terminal after all
        }
    }

    /// <summary>Sets the width of everything Spectre.Console draws on the current console.</summary>
    public static void Apply(bool redirected) => AnsiConsole.Profile.Width = Width(redirected);

    /// <summary>The lines <paramref name="what"/> takes when drawn <paramref name="width"/> wide, without
    /// trailing blanks.</summary>
    public static List<string> Lines(IRenderable what, int width)
    {
        var text = new StringWriter();
        IAnsiConsole console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(text), Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors,
            Interactive = InteractionSupport.No,
        });
        console.Profile.Width = width;
        console.Profile.Capabilities.Unicode = AnsiConsole.Profile.Capabilities.Unicode;
        console.Write(what);
        List<string> lines = text.ToString().Split('\n').Select(l => l.TrimEnd('\r', ' ')).ToList();
        if (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
        return lines;
    }

    /// <summary>The widest line of <paramref name="what"/> drawn without a width limit.</summary>
    public static int NaturalWidth(IRenderable what) => Lines(what, 4096).Select(l => l.Length).DefaultIfEmpty(0).Max();

    /// <summary>Writes <paramref name="what"/> as plain lines fitted to the console's width (its natural
    /// width with `--wide`).</summary>
    public static void Write(IRenderable what)
    {
        int width = Wide ? Math.Max(AnsiConsole.Profile.Width, NaturalWidth(what)) : AnsiConsole.Profile.Width;
        foreach (string line in Lines(what, width)) AnsiConsole.Console.Profile.Out.Writer.WriteLine(line);
    }
}

/// <summary>A table of rows (one per VM) whose columns may be dropped, least important first, when the
/// table does not fit the width; <see cref="Render"/> picks what fits.</summary>
internal sealed class FittedTable(string title)
{
    private readonly List<(string Header, int Importance)> _columns = new();
    private readonly List<string[]> _rows = new();

    /// <summary>Adds a column; a lower <paramref name="importance"/> is dropped first (0: never dropped).</summary>
    public FittedTable Column(string header, int importance)
    {
        _columns.Add((header, importance));
        return this;
    }

    public FittedTable Row(params string[] cells)
    {
        if (cells.Length != _columns.Count) throw new ArgumentException($"a row of {cells.Length} cells for {_columns.Count} columns", nameof(cells));
        _rows.Add(cells);
        return this;
    }

    /// <summary>Every column as one table (without the title).</summary>
    public Table Full() => Table(Enumerable.Range(0, _columns.Count).ToList(), dropped: 0);

    /// <summary>All columns if they fit in <paramref name="width"/>; else the most important that fit, with a
    /// caption naming `--wide`; else (<paramref name="blocksWhenNarrow"/>) one block per row with every value.</summary>
    public IRenderable Render(int width, bool wide, bool blocksWhenNarrow)
    {
        Table full = Full();
        if (wide || Terminal.NaturalWidth(full) <= width) return Titled(full);
        if (blocksWhenNarrow) return Blocks(width);
        List<int> kept = Enumerable.Range(0, _columns.Count).ToList();
        foreach (int drop in Enumerable.Range(0, _columns.Count).Where(i => _columns[i].Importance > 0).OrderBy(i => _columns[i].Importance).ThenByDescending(i => i))
        {
            kept.Remove(drop);
            Table t = Table(kept, _columns.Count - kept.Count);
            if (Terminal.NaturalWidth(t) <= width) return Titled(t);
        }
        return Blocks(width);
    }

    // The title above the table as text that wraps at the width (a table's own title widens the table).
    private Rows Titled(Table table) => new(new Text(title), table);

    private Table Table(List<int> columns, int dropped)
    {
        var table = new Table();
        if (dropped > 0) table.Caption($"{dropped} more column{(dropped == 1 ? "" : "s")} with --wide");
        foreach (int c in columns) table.AddColumn(new TableColumn(Markup.Escape(_columns[c].Header)).RightAligned());
        foreach (string[] row in _rows) table.AddRow(columns.Select(c => Markup.Escape(row[c])).ToArray());
        return table;
    }

    /// <summary>One block per row: its first cell as a heading, then "header value" pairs packed into lines
    /// of at most <paramref name="width"/> characters.</summary>
    public IRenderable Blocks(int width)
    {
        var lines = new List<string>();
        lines.AddRange(Wrap(title, width));
        foreach (string[] row in _rows)
        {
            lines.AddRange(Wrap(row[0], width));
            string line = " ";
            for (int c = 1; c < _columns.Count; c++)
            {
                string item = $"{_columns[c].Header} {row[c]}";
                if (line.Length > 1 && line.Length + 2 + item.Length > width)
                {
                    lines.Add(line);
                    line = " ";
                }
                line += line.Length > 1 ? $", {item}" : $" {item}";
            }
            if (line.Length > 1) lines.AddRange(Wrap(line, width));
        }
        return new Text(string.Join('\n', lines));
    }

    private static IEnumerable<string> Wrap(string text, int width)
    {
        for (int i = 0; i < text.Length; i += width) yield return text.Substring(i, Math.Min(width, text.Length - i));
    }
}
