// A sqlite run's application figures in every output the per-VM record drives: the summary's app object, the CSV's
// app columns, the trace's per-tick sample events (byte-identical for a seed), the live table, the sweep's columns
// and an application panel in the timeline plot; VMs without an application have none of them.
using System.Text.Json.Nodes;
using PageLab.Core.Applications;
using PageLab.Lab.Workloads;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

// SQLite's allocator is process-wide: these tests rely on the assembly running one test at a time (AssemblyInfo.cs).
public class SqliteOutputTests
{
    private const int Ticks = 16, PerTick = 120;

    private static void SkipUnsupported()
    {
        if (SqliteAllocator.Unsupported is { } why) Assert.Skip(why);
    }

    // One thread: a run with one thread is decided by its seed (with more, SQLite's threads interleave as they
    // will, and the heap they use moves the scheduler's estimates).
    private static Scenario Small() => new()
    {
        Name = "sqlite-outputs", HostPages = 3072, Ticks = Ticks, SamplePeriodTicks = 4, Seed = 5,
        Vms =
        [
            new VmSpec { Name = "db", Pages = 2048, Workload = SqliteKind.Workload(1536,
                new SqliteSpec { Rows = 5000, Mix = "ycsb-a", Threads = 1, TransactionsPerTick = PerTick, CachePages = 800, Adapt = "hypervisor" }) },
            new VmSpec { Name = "growing", Pages = 2048, Workload = new WorkloadSpec { Kind = "growing", Pages = 200, EndPages = 1800, TouchesPerTick = 300 } },
        ],
    };

    private static string SmallFile(TempDir dir)
    {
        string file = Path.Combine(dir.Path, "sqlite-outputs.json");
        File.WriteAllText(file, Small().ToJson());
        return file;
    }

    private static readonly VmMeasure[] AppCsv = VmMeasures.Csv.Where(m => m.Group == MeasureGroup.App).ToArray();

    [Fact]
    public void A_sqlite_run_shows_its_application_in_the_json_csv_trace_live_table_and_plot()
    {
        SkipUnsupported();
        using var dir = new TempDir();
        string csv = Path.Combine(dir.Path, "t.csv"), json = Path.Combine(dir.Path, "s.json"), trace = Path.Combine(dir.Path, "t.jsonl"),
            png = Path.Combine(dir.Path, "p.png");
        CliResult r = CliHarness.Run(new Dictionary<string, string> { ["COLUMNS"] = "400" }, dir.Path, 300,
            "run", SmallFile(dir), "--wide", "--csv", csv, "--json", json, "--trace", trace, "--plot", png);
        Assert.True(r.Exit == 0, $"exit {r.Exit}; stderr: {r.Err}");

        // The summary: the db's app object, none for the other VM.
        RunSummary summary = RunSummary.FromJson(File.ReadAllText(json));
        AppTotals app = summary.Vms[0].App!;
        Assert.Null(summary.Vms[1].App);
        Assert.Equal("sqlite", app.Kind);
        Assert.Equal(Ticks * PerTick, app.Transactions + app.FailedTransactions);
        Assert.True(app.Transactions > 0 && app.CacheHits > 0 && app.HeapBytesInGuest > 0, $"{app}");
        Assert.Equal(0, app.WrongResults);
        Assert.Equal(0, app.HeapBytesOutsideGuest);

        // The CSV: the app columns carry the db's figures per tick (the last row its summary's), empty for the other VM.
        string[] header = File.ReadLines(csv).First().Split(',');
        List<string[]> rows = File.ReadLines(csv).Skip(1).Select(l => l.Split(',')).ToList();
        int Col(VmMeasure m) => Array.IndexOf(header, m.Name);
        Assert.All(AppCsv, m => Assert.True(Col(m) >= 0, $"no CSV column {m.Name}"));
        Assert.All(rows.Where(c => c[1] == "growing"), c => Assert.All(AppCsv, m => Assert.Equal("", c[Col(m)])));
        string[] dbLast = rows.Last(c => c[1] == "db");
        foreach (VmMeasure m in AppCsv) Assert.Equal(m.Format(m.Of(summary.Vms[0])), dbLast[Col(m)]);

        // The trace: one sample event per tick for the db only, its counts those of the CSV's row at that tick,
        // the last the summary's; no wall-clock figure.
        List<RunEvent> samples = RunTraceWriter.Read(trace).Where(e => e.Kind == RunEventKind.Sample).ToList();
        Assert.Equal(Enumerable.Range(1, Ticks), samples.Select(e => e.Tick));
        Assert.All(samples, e => Assert.Equal("db", e.Vm));
        Assert.All(samples, e => Assert.Equal(VmMeasures.Traced.Select(m => m.Name), e.Figures!.Keys));
        foreach (RunEvent e in samples)
        {
            string[] row = rows.Single(c => c[0] == $"{e.Tick}" && c[1] == "db");
            foreach (VmMeasure m in AppCsv.Where(m => m.Trace)) Assert.Equal(row[Col(m)], $"{e.Figures![m.Name]}");
        }
        foreach (VmMeasure m in VmMeasures.Traced) Assert.Equal(m.Of(summary.Vms[0]), (double?)samples[^1].Figures![m.Name]);
        Assert.True(samples.Select(e => e.Figures!["appTransactions"]).Zip(samples.Skip(1).Select(e => e.Figures!["appTransactions"])).All(p => p.First <= p.Second));

        // The live table at the last tick: the application's columns, the db's figures, "-" for the other VM.
        (string[] cols, List<string[]> cells) = VmMeasuresTests.LiveTable(r.Out);
        List<VmMeasure> columns = VmMeasures.TableColumns(sharing: false, app: true);
        string[] tableHeader = ["VM", .. columns.Select(m => m.Header!)];
        Assert.Equal(tableHeader, cols);
        string[] db = cells.Single(c => c[0] == "db"), growing = cells.Single(c => c[0] == "growing");
        foreach (VmMeasure m in columns.Where(m => m.Group == MeasureGroup.App))
        {
            int at = 1 + columns.IndexOf(m);
            Assert.Equal("-", growing[at]);
            // Counts exactly; the clock's figures (tx/s, latency) are read again for the summary, so only their presence.
            if (m.Integral) Assert.Equal(m.Format(m.Of(summary.Vms[0])), db[at]);
            else Assert.Matches(@"^\d+(\.\d+)?$", db[at]);
        }

        // The end-of-run summary table: the application's figures at the end.
        (string[] sumCols, List<string[]> sumCells) = VmMeasuresTests.LiveTable(r.Out, summaryTable: true);
        foreach (VmMeasure m in columns.Where(m => m.Group == MeasureGroup.App && m.Integral))
        {
            int at = Array.IndexOf(sumCols, m.Header);
            Assert.True(at > 0, $"no column {m.Header} in the summary table");
            Assert.Equal(m.Format(m.Of(summary.Vms[0])), sumCells.Single(c => c[0] == "db")[at]);
            Assert.Equal("-", sumCells.Single(c => c[0] == "growing")[at]);
        }

        // The plot: a panel per VM and one for the db's application (PNG height at bytes 20-23, big-endian).
        byte[] image = File.ReadAllBytes(png);
        int height = image[20] << 24 | image[21] << 16 | image[22] << 8 | image[23];
        Assert.Equal(3 * PageLab.Report.TimelinePlot.DefaultPanelHeightPx, height);
    }

    [Fact]
    public void The_same_seed_gives_a_byte_identical_trace_with_the_application_s_figures()
    {
        SkipUnsupported();
        using var dir = new TempDir();
        string[] paths = [Path.Combine(dir.Path, "a.jsonl"), Path.Combine(dir.Path, "b.jsonl")];
        foreach (string path in paths)
        {
            using var runner = new ScenarioRunner(Small(), dir.Path);
            using (var writer = new RunTraceWriter(runner, path))
                foreach (TickSnapshot _ in runner.Run()) { }
        }
        byte[] a = File.ReadAllBytes(paths[0]), b = File.ReadAllBytes(paths[1]);
        Assert.True(a.AsSpan().SequenceEqual(b), "two runs of one seed wrote different traces");
        Assert.Equal(Ticks, RunTraceWriter.Read(paths[0]).Count(e => e.Kind == RunEventKind.Sample && e.Figures!["appTransactions"] > 0));
    }

    [Fact]
    public void A_sweep_of_a_sqlite_scenario_has_the_application_s_columns_equal_to_the_runs_summaries()
    {
        SkipUnsupported();
        using var dir = new TempDir();
        SmallFile(dir);
        string sweep = Path.Combine(dir.Path, "sweep.json"), output = Path.Combine(dir.Path, "out");
        File.WriteAllText(sweep, """
            { "scenario": "sqlite-outputs.json", "grid": { "vms[0].workload.sqlite.adapt": ["fixed", "hypervisor"] }, "seeds": 1 }
            """);
        CliResult r = CliHarness.Run(new Dictionary<string, string>(), dir.Path, 600, "sweep", sweep, "--out", output, "-j", "1", "--no-plot");
        Assert.True(r.Exit == 0, $"exit {r.Exit}; stderr: {r.Err}\nstdout: {r.Out}");

        Dictionary<string, object?[]> table = CliSweepTests.ReadParquet(Path.Combine(output, "sweep.parquet"));
        Assert.Equal(2, table["run"].Length);
        foreach (VmMeasure m in VmMeasures.All.Where(m => m.Group == MeasureGroup.App))
        {
            Assert.True(table.ContainsKey($"vm_db_{m.Name}"), $"no column vm_db_{m.Name}");
            Assert.False(table.ContainsKey($"vm_growing_{m.Name}"), $"a column vm_growing_{m.Name} for a VM without an application");
        }
        for (int i = 0; i < 2; i++)
        {
            RunSummary s = RunSummary.FromJson(File.ReadAllText(Path.Combine(output, "runs", $"{table["run"][i]}.json")));
            AppTotals app = s.Vms[0].App!;
            Assert.Equal(app.Transactions, table["vm_db_appTransactions"][i]);
            Assert.Equal(app.Transactions, table["appTransactions"][i]);
            Assert.Equal(app.CacheMisses, table["vm_db_appCacheMisses"][i]);
            Assert.Equal(app.HeapBytesInGuest, table["vm_db_appHeapBytesInGuest"][i]);
            Assert.Equal(app.WrongResults, table["vm_db_appWrongResults"][i]);
            Assert.Equal(app.LatencyP99Ms, table["vm_db_appLatencyP99Ms"][i]);
        }
        // The CSV has the same columns.
        Assert.Equal(string.Join(',', table.Keys), File.ReadLines(Path.Combine(output, "sweep.csv")).First());
    }
}
