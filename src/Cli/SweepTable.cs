// The results of a sweep as one table, one row per run: the swept keys' values, the seed, and figures of the
// run's `--json` summary (totals over VMs, per-VM figures, timings); written to Parquet (Parquet.Net) and CSV.
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Parquet;
using Parquet.Schema;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Cli;

/// <summary>A column: its name and values, all long?, double?, bool? or string (the Parquet type).</summary>
internal sealed record SweepColumn(string Name, Type Type, object?[] Values);

internal sealed class SweepTable
{
    /// <summary>Figures drawn against each swept key by `sweep` (totals over the VMs).</summary>
    public static readonly string[] PlottedFigures = ["guestPaging", "guestPageIns", "hostSwapOuts", "framesMovedBetweenVms", "criticalTicks"];

    // Per-VM figures: those of the per-VM record (VmMeasures) the run summary has, summed over the VMs that have
    // them for the totals and given per VM as vm_<name>_<figure>.
    private static readonly VmMeasure[] VmFigures = VmMeasures.All.Where(m => m.InSummary).ToArray();

    private SweepTable(List<SweepColumn> columns) => Columns = columns;

    public List<SweepColumn> Columns { get; }

    public int RowCount => Columns.Count == 0 ? 0 : Columns[0].Values.Length;

    /// <summary>The table of <paramref name="runs"/> (in order) and their summaries.</summary>
    public static SweepTable Of(SweepSpec spec, IReadOnlyList<SweepRun> runs, IReadOnlyList<RunSummary> summaries)
    {
        var columns = new List<SweepColumn>();
        // A figure named as a swept key (policy, ticks) is that key's column, given once.
        void Add(string name, Type type, Func<int, object?> value)
        {
            if (columns.Any(c => c.Name == name)) return;
            columns.Add(new SweepColumn(name, type, Enumerable.Range(0, runs.Count).Select(value).ToArray()));
        }
        for (int k = 0; k < spec.Grid.Count; k++)
        {
            int key = k;
            (Type type, Func<JsonNode?, object?> convert) = ValueType(spec.Grid[k].Values);
            Add(SweepSpec.ColumnName(spec.Grid[k].Key), type, i => convert(runs[i].Point[key].Value));
        }
        Add("seed", typeof(long), i => (long)runs[i].Seed);
        Add("run", typeof(string), i => runs[i].Id);
        Add("scenario", typeof(string), i => summaries[i].Scenario);
        Add("policy", typeof(string), i => summaries[i].Policy);
        Add("ticks", typeof(long), i => (long)summaries[i].Ticks);
        Add("accountingOk", typeof(bool), i => summaries[i].AccountingOk);
        Add("framesMovedBetweenVms", typeof(long), i => summaries[i].Host.FramesMovedBetweenVms);
        Add("framesMovedPerTick", typeof(double), i => summaries[i].Host.FramesMovedPerTick);
        Add("freeFramesEnd", typeof(long), i => summaries[i].Host.FreeFramesEnd);
        Add("retiredFrames", typeof(long), i => summaries[i].Host.RetiredFrames);
        Add("reclamation", typeof(string), i => summaries[i].Reclamation);
        Add("framesSavedEnd", typeof(long), i => summaries[i].Sharing?.FramesSavedEnd);
        Add("peakFramesSaved", typeof(long), i => summaries[i].Sharing?.PeakFramesSaved);
        Add("pagesScanned", typeof(long), i => summaries[i].Sharing?.PagesScanned);
        // A figure no run has (an application's, in a sweep without one) gives no column.
        void Figure(string name, VmMeasure m, Func<RunSummary, double?> of)
        {
            double?[] values = summaries.Select(of).ToArray();
            if (values.All(v => v is null)) return;
            Add(name, m.Integral ? typeof(long) : typeof(double), i => values[i] is not double d ? null : m.Integral ? (long)d : (object)d);
        }
        foreach (VmMeasure m in VmFigures)
            Figure(m.Name, m, s => s.Vms.Select(m.Of).OfType<double>().Aggregate((double?)null, (sum, x) => (sum ?? 0) + x));
        // Per VM, in the order VMs first appear (a grid may rename or add VMs: absent VMs give nulls).
        List<string> vmNames = summaries.SelectMany(s => s.Vms.Select(v => v.Name)).Distinct().ToList();
        foreach (string vm in vmNames)
            foreach (VmMeasure m in VmFigures)
                Figure($"vm_{SweepSpec.ColumnName(vm)}_{m.Name}", m, s => s.Vms.FirstOrDefault(v => v.Name == vm) is VmTotals t ? m.Of(t) : null);
        Add("bootSeconds", typeof(double), i => summaries[i].Timings.BootSeconds);
        Add("ticksSeconds", typeof(double), i => summaries[i].Timings.TicksSeconds);
        Add("meanTickMilliseconds", typeof(double), i => summaries[i].Timings.MeanTickMilliseconds);
        Add("totalSeconds", typeof(double), i => summaries[i].Timings.TotalSeconds);
        return new SweepTable(columns);
    }

    // The column type of a swept key's values: whole numbers, numbers, booleans, or text (JSON text for lists and objects).
    private static (Type, Func<JsonNode?, object?>) ValueType(List<JsonNode?> values)
    {
        JsonValueKind[] kinds = values.Select(v => v?.GetValueKind() ?? JsonValueKind.Null).ToArray();
        if (kinds.All(k => k is JsonValueKind.Number or JsonValueKind.Null))
        {
            if (values.All(v => v is null || v.AsValue().TryGetValue(out long _)))
                return (typeof(long), v => v is null ? null : v.GetValue<long>());
            return (typeof(double), v => v is null ? null : v.GetValue<double>());
        }
        if (kinds.All(k => k is JsonValueKind.True or JsonValueKind.False or JsonValueKind.Null))
            return (typeof(bool), v => v is null ? null : v.GetValue<bool>());
        return (typeof(string), v => v is null ? null : v.GetValueKind() == JsonValueKind.String ? v.GetValue<string>() : v.ToJsonString());
    }

    /// <summary>Rows as name → value, for the plot.</summary>
    public List<IReadOnlyDictionary<string, object?>> Rows() =>
        Enumerable.Range(0, RowCount).Select(i => (IReadOnlyDictionary<string, object?>)Columns.ToDictionary(c => c.Name, c => c.Values[i])).ToList();

    /// <summary>Writes the table as one Parquet row group (columns nullable, types as <see cref="SweepColumn.Type"/>).</summary>
    public void WriteParquet(string path) => WriteParquetAsync(path).GetAwaiter().GetResult();

    private async Task WriteParquetAsync(string path)
    {
        DataField[] fields = Columns.Select(c => c.Type == typeof(string) ? new DataField<string>(c.Name, nullable: true)
            : c.Type == typeof(long) ? new DataField<long?>(c.Name) : c.Type == typeof(double) ? (DataField)new DataField<double?>(c.Name) : new DataField<bool?>(c.Name)).ToArray();
        var schema = new ParquetSchema(fields);
        await using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read);
        await using ParquetWriter writer = await ParquetWriter.CreateAsync(schema, stream);
        using ParquetRowGroupWriter group = writer.CreateRowGroup();
        for (int c = 0; c < Columns.Count; c++)
        {
            object?[] v = Columns[c].Values;
            if (Columns[c].Type == typeof(string)) await group.WriteAsync(fields[c], v.Select(x => (string?)x).ToArray()!, null);
            else if (Columns[c].Type == typeof(long)) await group.WriteAsync<long>(fields[c], v.Select(x => (long?)x).ToArray(), null);
            else if (Columns[c].Type == typeof(double)) await group.WriteAsync<double>(fields[c], v.Select(x => (double?)x).ToArray(), null);
            else await group.WriteAsync<bool>(fields[c], v.Select(x => (bool?)x).ToArray(), null);
        }
    }

    /// <summary>Writes the table as CSV (RFC 4180): a header of the column names, then a row per run;
    /// numbers in invariant culture, booleans true/false, nulls empty.</summary>
    public void WriteCsv(string path)
    {
        var text = new StringBuilder();
        text.Append(string.Join(',', Columns.Select(c => RunTimeline.CsvField(c.Name)))).Append('\n');
        for (int i = 0; i < RowCount; i++)
            text.Append(string.Join(',', Columns.Select(c => c.Values[i] switch
            {
                null => "",
                bool b => b ? "true" : "false",
                double d => d.ToString("R", CultureInfo.InvariantCulture),
                IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
                var o => RunTimeline.CsvField($"{o}"),
            }))).Append('\n');
        File.WriteAllText(path, text.ToString());
    }
}
