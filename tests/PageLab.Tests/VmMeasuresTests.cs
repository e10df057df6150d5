// The per-VM measurement record (VmMeasures) drives every output by name: each figure is once in the CSV header,
// the live table, the meter, the run summary and the sweep's columns, with the values the record reads; a figure
// with no typed summary key goes into the summary by its name and comes back into the sweep from there.
using System.Diagnostics.Metrics;
using System.Text.Json.Nodes;
using PageLab.Cli;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class VmMeasuresTests
{
    private static readonly string[] WallClock = ["appTransactionsPerSecond", "appLatencyP50Ms", "appLatencyP99Ms"];

    [Fact]
    public void Every_figure_has_one_name_and_the_trace_takes_only_whole_counts_no_clock_measures()
    {
        IReadOnlyList<VmMeasure> all = VmMeasures.All;
        Assert.Equal(all.Count, all.Select(m => m.Name).Distinct().Count());
        Assert.Equal(VmMeasures.Metered.Count, VmMeasures.Metered.Select(m => m.Meter).Distinct().Count());
        List<string> headers = all.Where(m => m.Header is not null).Select(m => m.Header!).ToList();
        Assert.Equal(headers.Count, headers.Distinct().Count());
        // Whatever is written per tick is read per tick.
        Assert.All(all.Where(m => m.Csv || m.Header is not null || m.Meter is not null || m.Trace || m.Plot), m => Assert.NotNull(m.Value));
        Assert.All(VmMeasures.Traced, m => Assert.True(m.Integral, $"{m.Name} is traced but not a whole number"));
        Assert.Empty(VmMeasures.Traced.Select(m => m.Name).Intersect(WallClock));
        // The application's figures are all in the record: every one the summary's app object has.
        foreach (string key in typeof(AppTotals).GetProperties().Select(p => p.Name).Where(n => n != "Kind"))
            Assert.True(VmMeasures.All.Any(m => m.Name == $"app{key}" && m.InSummary), $"app.{key} is not a figure of the record");
    }

    private static string ShortFile(TempDir dir)
    {
        string file = Path.Combine(dir.Path, "short.json");
        File.WriteAllText(file, RunOutputTests.Short(ticks: 12).ToJson());
        return file;
    }

    /// <summary>The live table's last rendering in a run's output (the last table before the summary's), or with
    /// <paramref name="summaryTable"/> the end-of-run summary table: its header cells and its rows' cells.</summary>
    internal static (string[] Header, List<string[]> Rows) LiveTable(string output, bool summaryTable = false)
    {
        const string firstHeader = "VM";
        int summary = output.IndexOf("summary of", StringComparison.Ordinal);
        string part = summaryTable ? output[summary..] : output[..(summary < 0 ? output.Length : summary)];
        string[] lines = part.Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        static string[] Cells(string line) => line.Split('│').Skip(1).SkipLast(1).Select(c => c.Trim()).ToArray();
        int at = Array.FindLastIndex(lines, l => l.StartsWith('│') && Cells(l).FirstOrDefault() == firstHeader);
        Assert.True(at >= 0, $"no table headed {firstHeader} in:\n{output}");
        var rows = new List<string[]>();
        for (int i = at + 1; i < lines.Length && !lines[i].StartsWith('└'); i++)
            if (lines[i].StartsWith('│')) rows.Add(Cells(lines[i]));
        return (Cells(lines[at]), rows);
    }

    [Fact]
    public void The_record_drives_the_csv_the_live_table_the_summary_and_the_sweep_columns()
    {
        using var dir = new TempDir();
        string csv = Path.Combine(dir.Path, "t.csv"), json = Path.Combine(dir.Path, "s.json");
        CliResult r = CliHarness.Run(new Dictionary<string, string> { ["COLUMNS"] = "400" }, dir.Path, 120,
            "run", ShortFile(dir), "--no-plot", "--wide", "--csv", csv, "--json", json);
        Assert.True(r.Exit == 0, $"exit {r.Exit}; stderr: {r.Err}");

        // CSV: tick, vm, then each CSV figure once, in the record's order.
        string[] rows = File.ReadAllLines(csv);
        string[] csvHeader = ["tick", "vm", .. VmMeasures.All.Where(m => m.Csv).Select(m => m.Name)];
        Assert.Equal(csvHeader, rows[0].Split(','));
        // The live table: VM, then each figure with a header (no sharing, no application here), once.
        (string[] header, List<string[]> cells) = LiveTable(r.Out);
        List<VmMeasure> columns = VmMeasures.TableColumns(sharing: false, app: false);
        string[] tableHeader = ["VM", .. columns.Select(m => m.Header!)];
        Assert.Equal(tableHeader, header);
        Assert.DoesNotContain(header, h => VmMeasures.All.Any(m => m.Group != MeasureGroup.Vm && m.Header == h));

        // The summary: each figure of the run is a key of every VM's object, its value what the record reads.
        RunSummary summary = RunSummary.FromJson(File.ReadAllText(json));
        JsonArray vms = JsonNode.Parse(File.ReadAllText(json))!["vms"]!.AsArray();
        foreach (VmMeasure m in VmMeasures.All.Where(m => m.InSummary && m.Group != MeasureGroup.App))
            for (int i = 0; i < vms.Count; i++)
            {
                Assert.True(vms[i]!.AsObject().ContainsKey(m.Name), $"vms[{i}] has no key {m.Name}");
                Assert.Equal(vms[i]![m.Name]!.GetValue<double>(), m.Of(summary.Vms[i]));
            }
        Assert.All(summary.Vms, v => Assert.Null(v.App));
        Assert.All(VmMeasures.All.Where(m => m.Group == MeasureGroup.App), m => Assert.Null(m.Of(summary.Vms[0])));
        // The table's cells at the last tick are the CSV's (the same snapshot), for the figures both have.
        foreach (VmTotals v in summary.Vms)
        {
            string[] row = cells.Single(c => c[0] == v.Name);
            string[] last = rows.Last(l => l.StartsWith($"{summary.TicksRun},{v.Name},", StringComparison.Ordinal)).Split(',');
            foreach (VmMeasure m in columns.Where(m => m.Csv && m.Cell is null))
                Assert.Equal(last[2 + VmMeasures.Csv.ToList().IndexOf(m)], row[1 + columns.IndexOf(m)]);
        }

        // The sweep: each run figure is a total column and a column per VM; the application's, which no run has, none.
        string sweep = Path.Combine(dir.Path, "sweep.json");
        File.WriteAllText(sweep, """{ "scenario": "short.json", "grid": { "idleTax": [0.75] }, "seeds": 1 }""");
        SweepSpec spec = SweepSpec.Load(sweep);
        SweepTable table = SweepTable.Of(spec, spec.Runs(), [summary]);
        List<string> names = table.Columns.Select(c => c.Name).ToList();
        foreach (VmMeasure m in VmMeasures.All.Where(m => m.InSummary && m.Group != MeasureGroup.App))
        {
            Assert.Single(names, n => n == m.Name);
            Assert.Equal((long?)summary.Vms.Sum(v => m.Of(v)), table.Columns.Single(c => c.Name == m.Name).Values[0]);
            foreach (VmTotals v in summary.Vms)
                Assert.Equal((long?)m.Of(v), table.Columns.Single(c => c.Name == $"vm_{v.Name}_{m.Name}").Values[0]);
        }
        Assert.DoesNotContain(names, n => VmMeasures.All.Any(m => m.Group == MeasureGroup.App && (n == m.Name || n.EndsWith($"_{m.Name}", StringComparison.Ordinal))));
    }

    [Fact]
    public void Every_metered_figure_is_an_instrument_reporting_the_record_s_value_per_VM()
    {
        var measured = new List<(string Name, double Value, string? Vm, object? Run)>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == PageLabMetrics.MeterName && VmMeasures.Metered.Any(m => m.Meter == instrument.Name))
                l.EnableMeasurementEvents(instrument);
        };
        void Add(Instrument i, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            string? vm = null;
            object? run = null;
            foreach (KeyValuePair<string, object?> kv in tags)
            {
                if (kv.Key == PageLabMetrics.VmTag) vm = kv.Value as string;
                if (kv.Key == PageLabMetrics.RunTag) run = kv.Value;
            }
            lock (measured) measured.Add((i.Name, value, vm, run));
        }
        listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Add(i, v, tags));
        listener.SetMeasurementEventCallback<double>((i, v, tags, _) => Add(i, v, tags));
        listener.Start();

        using var runner = new ScenarioRunner(RunOutputTests.Short(ticks: 8) with { Name = "measures-meter" });
        TickSnapshot last = runner.Run().Last();
        listener.RecordObservableInstruments();
        object? mine = measured.First(m => m.Name == "pagelab.vm.frames.held" && m.Vm == "idle" && m.Run is not null).Run;
        // Only this run's: a runner of another test may still be registered.
        var ours = measured.Where(m => Equals(m.Run, mine)).ToList();
        var host = new TickHost(last.FreeFrames, last.Sharing.SharedFrames, 0);
        foreach (VmMeasure m in VmMeasures.Metered)
            foreach (VmSnapshot v in last.Vms)
            {
                List<double> seen = ours.Where(x => x.Name == m.Meter && x.Vm == v.Name).Select(x => x.Value).ToList();
                if (m.At(v, host) is double expected) Assert.Equal(expected, Assert.Single(seen));
                else Assert.Empty(seen); // an application's figure of a VM without one
            }
    }

    [Fact]
    public void A_figure_with_no_typed_key_goes_into_the_summary_by_name_and_back_into_the_sweep()
    {
        // A figure as the page-cache counters will be added: one record line, with Summary set.
        var end = new VmMeasure("guestFreePagesEnd", "{page}", "free guest pages at the end")
            { Value = (v, _) => v.FreePages, Kind = MeasureKind.Level, Summary = RunFigure.End };
        var peak = new VmMeasure("guestFreePagesPeak", "{page}", "most free guest pages at a tick")
            { Value = (v, _) => v.FreePages, Kind = MeasureKind.Level, Summary = RunFigure.Max };
        using var runner = new ScenarioRunner(RunOutputTests.Short(ticks: 10));
        RunTimeline timeline = RunTimeline.Attach(runner);
        TickSnapshot last = runner.Run().Last();
        RunSummary summary = RunSummary.Of(timeline, last, runner.Arena, runner.CheckAccounting(), new RunTimings(0, 0, 0, 0));
        summary = summary with
        {
            Vms = summary.Vms.Select(v => v with { Figures = RunSummary.FiguresOf(timeline, timeline.Vm(v.Name), [end, peak]) }).ToList(),
        };

        // Whole numbers as whole numbers, not as doubles that print alike.
        Assert.All(summary.Vms, v => Assert.IsType<long>(v.Figures!["guestFreePagesEnd"]));
        string json = summary.ToJson();
        JsonArray vms = JsonNode.Parse(json)!["vms"]!.AsArray();
        RunSummary back = RunSummary.FromJson(json);
        for (int i = 0; i < last.Vms.Count; i++)
        {
            ulong expectedEnd = last.Vms[i].FreePages, expectedPeak = timeline.Vms[i].Samples.Max(s => s.FreePages);
            Assert.Equal(expectedEnd, vms[i]!["guestFreePagesEnd"]!.GetValue<ulong>());
            Assert.Equal(expectedPeak, vms[i]!["guestFreePagesPeak"]!.GetValue<ulong>());
            Assert.Equal(expectedEnd, end.Of(back.Vms[i]));
            Assert.Equal(expectedPeak, peak.Of(back.Vms[i]));
            // The typed keys are unchanged beside it.
            Assert.Equal(summary.Vms[i].GuestPageOuts, back.Vms[i].GuestPageOuts);
        }
    }
}
