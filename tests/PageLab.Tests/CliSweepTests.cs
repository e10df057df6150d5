// `pagelab sweep`: a grid of 2 keys x 3 values x 3 seeds run as real `pagelab run` processes; the Parquet
// file read back (rows, columns, values equal to each run's --json summary), the CSV and plot, a resumed
// sweep, and --emit-jobs + --merge giving the same table as the local sweep. Bad sweep files: exit 2.
using System.Diagnostics;
using Parquet;
using Parquet.Schema;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class CliSweepTests
{
    private static readonly Dictionary<string, string> NoEnvironment = new();

    // Two small VMs and a few ticks: a run takes well under a second, most of it starting .NET.
    private static string Scenario(TempDir dir)
    {
        string file = Path.Combine(dir.Path, "tiny.json");
        File.WriteAllText(file, """
            {
              "name": "tiny", "hostPages": 640, "ticks": 6, "samplePeriodTicks": 2,
              "vms": [
                { "name": "idle",   "pages": 512, "workload": { "kind": "idle",   "pages": 300, "touchesPerTick": 5 } },
                { "name": "active", "pages": 512, "workload": { "kind": "active", "pages": 400, "touchesPerTick": 80 } }
              ]
            }
            """);
        return file;
    }

    private static string Sweep(TempDir dir, string body, string name = "sweep.json")
    {
        string file = Path.Combine(dir.Path, name);
        File.WriteAllText(file, body);
        return file;
    }

    private const string Grid = """
        {
          "scenario": "tiny.json",
          "grid": { "idleTax": [0, 0.5, 0.9], "vms[1].shares": [500, 1000, 3000] },
          "seeds": 3,
          "set": { "batchPages": 64 }
        }
        """;

    /// <summary>A Parquet file's columns by name, values boxed (long?, double?, bool?, string).</summary>
    internal static Dictionary<string, object?[]> ReadParquet(string path) => ReadParquetAsync(path).GetAwaiter().GetResult();

    private static async Task<Dictionary<string, object?[]>> ReadParquetAsync(string path)
    {
        await using ParquetReader reader = await ParquetReader.CreateAsync(path);
        Assert.Equal(1, reader.RowGroupCount);
        using ParquetRowGroupReader group = reader.OpenRowGroupReader(0);
        int n = checked((int)group.RowCount);
        var columns = new Dictionary<string, object?[]>();
        foreach (DataField f in reader.Schema.DataFields)
        {
            if (f.ClrType == typeof(string) || f.ClrType == typeof(ReadOnlyMemory<char>))
            {
                var v = new string?[n];
                await group.ReadAsync(f, v.AsMemory(), null, default);
                columns[f.Name] = v.Cast<object?>().ToArray();
            }
            else if (f.ClrType == typeof(long))
            {
                var v = new long?[n];
                await group.ReadAsync<long>(f, v.AsMemory(), null, default);
                columns[f.Name] = v.Cast<object?>().ToArray();
            }
            else if (f.ClrType == typeof(double))
            {
                var v = new double?[n];
                await group.ReadAsync<double>(f, v.AsMemory(), null, default);
                columns[f.Name] = v.Cast<object?>().ToArray();
            }
            else
            {
                Assert.Equal(typeof(bool), f.ClrType);
                var v = new bool?[n];
                await group.ReadAsync<bool>(f, v.AsMemory(), null, default);
                columns[f.Name] = v.Cast<object?>().ToArray();
            }
        }
        return columns;
    }

    [Fact]
    public void A_sweep_writes_a_row_per_run_equal_to_the_runs_summaries_resumes_and_emitted_jobs_merge_to_the_same_table()
    {
        using var dir = new TempDir();
        Scenario(dir);
        string sweep = Sweep(dir, Grid), local = Path.Combine(dir.Path, "local");

        CliResult r = CliHarness.Run(NoEnvironment, dir.Path, 600, "sweep", sweep, "--out", local, "-j", "2");

        Assert.True(r.Exit == 0, $"exit {r.Exit}; stderr: {r.Err}\nstdout: {r.Out}");
        Assert.Contains("27 runs, 0 already done, 27 to run, 2 at a time", r.Out);
        Dictionary<string, object?[]> table = ReadParquet(Path.Combine(local, "sweep.parquet"));
        Assert.All(table.Values, c => Assert.Equal(27, c.Length));
        foreach (string column in new[] { "idleTax", "vms_1_shares", "seed", "run", "guestPageIns", "hostStalls", "framesMovedBetweenVms",
                     "vm_idle_guestPageOuts", "vm_active_hostStalls", "totalSeconds" })
            Assert.Contains(column, table.Keys);
        // Every grid point with every seed, once.
        var points = Enumerable.Range(0, 27).Select(i => ((double?)table["idleTax"][i], (long?)table["vms_1_shares"][i], (long?)table["seed"][i])).ToHashSet();
        Assert.Equal(27, points.Count);
        Assert.Equal([0.0, 0.5, 0.9], points.Select(p => p.Item1!.Value).Distinct().Order());
        Assert.Equal([500L, 1000L, 3000L], points.Select(p => p.Item2!.Value).Distinct().Order());
        Assert.Equal([1L, 2L, 3L], points.Select(p => p.Item3!.Value).Distinct().Order());
        // Each row holds what its run's --json summary says.
        for (int i = 0; i < 27; i++)
        {
            RunSummary s = RunSummary.FromJson(File.ReadAllText(Path.Combine(local, "runs", $"{table["run"][i]}.json")));
            Assert.Equal((long)s.Seed, table["seed"][i]);
            Assert.Equal("tiny", table["scenario"][i]);
            Assert.Equal((long)s.Vms.Sum(v => (long)v.GuestPageIns), table["guestPageIns"][i]);
            Assert.Equal((long)s.Vms.Sum(v => (long)v.HostStalls), table["hostStalls"][i]);
            Assert.Equal(s.Host.FramesMovedBetweenVms, table["framesMovedBetweenVms"][i]);
            Assert.Equal((long)s.Vms[0].GuestPageOuts, table["vm_idle_guestPageOuts"][i]);
            Assert.Equal((long)s.Vms[1].HostStalls, table["vm_active_hostStalls"][i]);
            Assert.Equal(s.AccountingOk, table["accountingOk"][i]);
            Assert.Equal(s.Timings.TotalSeconds, table["totalSeconds"][i]);
            Assert.Equal(s.Vms[1].Shares, (int)(long)table["vms_1_shares"][i]!);
        }
        string[] csv = File.ReadAllLines(Path.Combine(local, "sweep.csv"));
        Assert.Equal(28, csv.Length);
        Assert.Equal(string.Join(',', table.Keys), csv[0]);
        byte[] png = File.ReadAllBytes(Path.Combine(local, "sweep.png"));
        Assert.Equal((byte)'P', png[1]);
        Assert.True(png.Length > 20_000, $"a {png.Length}-byte plot is too small for 10 panels");

        // Resumed: only the runs whose summaries are missing or cut short run again.
        string[] files = Directory.GetFiles(Path.Combine(local, "runs"));
        File.Delete(files[0]);
        File.WriteAllText(files[1], File.ReadAllText(files[1])[..40]);
        CliResult again = CliHarness.Run(NoEnvironment, dir.Path, 600, "sweep", sweep, "--out", local, "-j", "2");
        Assert.True(again.Exit == 0, $"exit {again.Exit}; stderr: {again.Err}");
        Assert.Contains("27 runs, 25 already done, 2 to run", again.Out);
        AssertSameResults(table, ReadParquet(Path.Combine(local, "sweep.parquet")));

        // --emit-jobs: one command per run; run them (as a batch scheduler would), then --merge.
        string emitted = Path.Combine(dir.Path, "emitted");
        CliResult jobs = CliHarness.InProcess("sweep", sweep, "-o", emitted, "--emit-jobs"); // -o: --out's short form
        Assert.Equal(0, jobs.Exit);
        string[] commands = jobs.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(27, commands.Length);
        Parallel.ForEach(commands, new ParallelOptions { MaxDegreeOfParallelism = 2 }, command =>
        {
            using var p = Process.Start(new ProcessStartInfo("sh", ["-c", command]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
            p.StandardOutput.ReadToEnd();
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            Assert.True(p.ExitCode == 0, $"`{command}` exited {p.ExitCode}: {err}");
        });
        CliResult merged = CliHarness.InProcess("sweep", sweep, "--out", emitted, "--merge", "--no-plot");
        Assert.True(merged.Exit == 0, $"exit {merged.Exit}; stderr: {merged.Err}");
        AssertSameResults(table, ReadParquet(Path.Combine(emitted, "sweep.parquet")));
        Assert.Empty(CliHarness.InProcess("sweep", sweep, "--out", emitted, "--emit-jobs").Out); // nothing left to do
    }

    // Equal tables but for wall-clock timings (the same seed gives the same figures, not the same times).
    private static void AssertSameResults(Dictionary<string, object?[]> expected, Dictionary<string, object?[]> actual)
    {
        Assert.Equal(expected.Keys, actual.Keys);
        string[] timings = ["bootSeconds", "ticksSeconds", "meanTickMilliseconds", "totalSeconds"];
        foreach (string column in expected.Keys.Except(timings)) Assert.Equal(expected[column], actual[column]);
    }

    [Fact]
    public void A_sigint_stops_a_sweep_after_the_runs_in_progress_and_the_next_sweep_does_only_the_rest()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("signals are sent with the kill command (Linux)");
        using var dir = new TempDir();
        Scenario(dir);
        string sweep = Sweep(dir, """{ "scenario": "tiny.json", "grid": { "idleTax": [0, 0.3, 0.6, 0.9] }, "seeds": 2 }"""), outDir = Path.Combine(dir.Path, "out");
        using ChildCli child = CliHarness.Start(dir.Path, dir.Path, "sweep", sweep, "--out", outDir, "-j", "1");
        Assert.True(child.WaitUntil(() => child.Out.Contains("[1/8]"), TimeSpan.FromSeconds(120)), $"no run finished; stderr: {child.Err}");

        child.Signal("INT");
        int exit = child.WaitForExit(TimeSpan.FromSeconds(120));

        Assert.True(exit == 130, $"exit {exit}; stderr: {child.Err}");
        Assert.Contains("sweep interrupted; run the same command again", child.Err);
        Assert.DoesNotContain("[8/8]", child.Out);
        Assert.False(File.Exists(Path.Combine(outDir, "sweep.parquet")));
        int done = Directory.GetFiles(Path.Combine(outDir, "runs")).Count(f => new FileInfo(f).Length > 0);
        CliResult rest = CliHarness.Run(NoEnvironment, dir.Path, 300, "sweep", sweep, "--out", outDir, "-j", "2", "--no-plot");
        Assert.True(rest.Exit == 0, $"exit {rest.Exit}; stderr: {rest.Err}");
        Assert.Contains($"8 runs, {done} already done, {8 - done} to run", rest.Out);
        Assert.Equal(8, ReadParquet(Path.Combine(outDir, "sweep.parquet"))["seed"].Length);
    }

    [Fact]
    public void A_sweep_over_policies_has_one_text_policy_column_in_the_grid_order()
    {
        using var dir = new TempDir();
        Scenario(dir);
        string sweep = Sweep(dir, """{ "scenario": "tiny.json", "grid": { "policy": ["static", "pagelab"] }, "seeds": 1 }"""), outDir = Path.Combine(dir.Path, "out");
        CliResult r = CliHarness.Run(NoEnvironment, dir.Path, 300, "sweep", sweep, "--out", outDir, "-j", "2");
        Assert.True(r.Exit == 0, $"exit {r.Exit}; stderr: {r.Err}");
        Dictionary<string, object?[]> table = ReadParquet(Path.Combine(outDir, "sweep.parquet"));
        Assert.Equal(["static", "pagelab"], table["policy"]);
        Assert.Single(File.ReadLines(Path.Combine(outDir, "sweep.csv")).First().Split(','), c => c == "policy");
        for (int i = 0; i < 2; i++)
            Assert.Equal(RunSummary.FromJson(File.ReadAllText(Path.Combine(outDir, "runs", $"{table["run"][i]}.json"))).Policy, table["policy"][i]);
    }

    [Fact]
    public void Merge_without_the_runs_fails_naming_how_many_are_missing()
    {
        using var dir = new TempDir();
        Scenario(dir);
        string sweep = Sweep(dir, Grid);
        CliResult r = CliHarness.InProcess("sweep", sweep, "--out", Path.Combine(dir.Path, "out"), "--merge");
        Assert.Equal(1, r.Exit);
        Assert.Contains("27 of 27 runs have no finished summary", r.Err);
        Assert.Contains("--emit-jobs", r.Err);
    }

    private static void Refused(string body, params string[] expected)
    {
        using var dir = new TempDir();
        Scenario(dir);
        string sweep = Sweep(dir, body);
        CliResult r = CliHarness.InProcess("sweep", sweep, "--out", Path.Combine(dir.Path, "out"));
        Assert.True(r.Exit == 2, $"exit {r.Exit}; stderr: {r.Err}");
        Assert.InRange(r.ErrLines.Length, 1, 2);
        foreach (string e in expected) Assert.Contains(e, r.ErrLines[0]);
        foreach (string leak in CliHarness.DotNetLeaks) Assert.DoesNotContain(leak, r.Err);
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "out")), "a refused sweep made its output directory");
    }

    [Fact]
    public void A_sweep_file_with_an_unknown_key_is_refused() =>
        Refused("""{ "scenario": "tiny.json", "grid": { "idleTax": [0] }, "seed": 3 }""", "seed: unknown key 'seed'", "grid, seeds, set");

    [Fact]
    public void A_sweep_without_a_grid_says_it_is_required() =>
        Refused("""{ "scenario": "tiny.json" }""", "grid: required");

    [Fact]
    public void A_grid_key_without_a_list_of_values_is_refused() =>
        Refused("""{ "scenario": "tiny.json", "grid": { "idleTax": 0.5 } }""", "grid.idleTax: 0.5 is not a non-empty list");

    [Fact]
    public void Zero_seeds_are_refused_with_the_range() =>
        Refused("""{ "scenario": "tiny.json", "grid": { "idleTax": [0] }, "seeds": 0 }""", "seeds: 0 is out of range", "1 to 1000");

    [Fact]
    public void A_bad_value_in_the_grid_names_its_point_and_key_before_anything_runs() =>
        Refused("""{ "scenario": "tiny.json", "grid": { "idleTax": [0, 2] } }""", "point idleTax=2", "idleTax: must be in [0, 1), got 2");

    [Fact]
    public void A_grid_index_past_the_vms_is_refused() =>
        Refused("""{ "scenario": "tiny.json", "grid": { "vms[4].shares": [1] } }""", "vms has 2 entries");

    [Fact]
    public void A_duplicate_key_in_a_sweep_file_is_refused_with_its_line() =>
        Refused("{ \"scenario\": \"tiny.json\",\n  \"grid\": { \"idleTax\": [0] },\n  \"grid\": { \"idleTax\": [1] } }", "line 3");

    [Fact]
    public void Emit_jobs_with_a_job_count_is_refused()
    {
        using var dir = new TempDir();
        Scenario(dir);
        CliResult r = CliHarness.InProcess("sweep", Sweep(dir, Grid), "--emit-jobs", "-j", "4");
        Assert.Equal(2, r.Exit);
        Assert.Contains("--emit-jobs and -j cannot be used together", r.Err);
    }
}
