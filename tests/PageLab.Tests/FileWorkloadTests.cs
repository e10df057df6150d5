// The `file` workload kind through `pagelab run`: its keys' checks, the four page-cache counters per VM in the
// JSON summary, the CSV and the plot, and the example where the page cache changes the answer.
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class FileWorkloadTests
{
    private static string Scenario(string workload, int ticks = 40) => $$"""
        { "name": "files", "hostPages": 1600, "ticks": {{ticks}}, "samplePeriodTicks": 5, "seed": 3,
          "vms": [
            { "name": "cache",  "pages": 1024, "workload": {{workload}} },
            { "name": "hungry", "pages": 1024, "workload": { "kind": "active", "pages": 950, "touchesPerTick": 300 } } ] }
        """;

    [Theory]
    [InlineData("""{ "kind": "file", "pattern": "zipf" }""", "fileMiB: a file workload needs its file's size: fileMiB or filePages")]
    [InlineData("""{ "kind": "file", "fileMiB": 1, "filePages": 256 }""", "filePages: give fileMiB or filePages, not both (got fileMiB 1 and filePages 256)")]
    [InlineData("""{ "kind": "file", "fileMiB": 2000 }""", "fileMiB: must be in (0, 1024], got 2000")]
    [InlineData("""{ "kind": "file", "filePages": 0 }""", "filePages: must be between 1 and 262144 (1024 MiB), got 0")]
    [InlineData("""{ "kind": "file", "filePages": 10, "pattern": "stride" }""", "pattern: 'stride' is not one of sequential, zipf, mixed")]
    [InlineData("""{ "kind": "file", "filePages": 10, "pattern": "zipf", "writeFraction": 0.5 }""", "writeFraction: only the mixed pattern writes; 'zipf' only reads (got writeFraction 0.5)")]
    [InlineData("""{ "kind": "file", "filePages": 10, "pattern": "mixed", "writeFraction": 1.5 }""", "writeFraction: must be in [0, 1], got 1.5")]
    [InlineData("""{ "kind": "file", "filePages": 10, "pattern": "sequential", "zipfSkew": 1 }""", "zipfSkew: a sequential scan has no zipfSkew (got 1)")]
    [InlineData("""{ "kind": "file", "filePages": 10, "zipfSkew": 9 }""", "zipfSkew: must be in (0, 5], got 9")]
    [InlineData("""{ "kind": "file", "filePages": 10, "touchesPerTick": -1 }""", "touchesPerTick: must be between 0 and 16777216, got -1")]
    public void A_bad_file_workload_is_refused_naming_the_key_and_its_value(string workload, string expected)
    {
        if (Environment.SystemPageSize != 4096) Assert.Skip("the messages give page counts of 4 KiB pages");
        var e = Assert.Throws<ScenarioException>(() => Lab.Scenarios.Scenario.Parse(Scenario(workload), "f.json"));
        Assert.Equal($"f.json: vms[0].workload.{expected}", e.Message);
    }

    [Fact]
    public void A_run_with_a_file_workload_reports_the_page_cache_counters_in_json_csv_and_plot()
    {
        using var dir = new TempDir();
        string file = Path.Combine(dir.Path, "files.json"), json = Path.Combine(dir.Path, "s.json"), csv = Path.Combine(dir.Path, "t.csv"),
            png = Path.Combine(dir.Path, "p.png");
        File.WriteAllText(file, Scenario("""{ "kind": "file", "filePages": 900, "pattern": "mixed", "touchesPerTick": 300, "writeFraction": 0.3 }"""));

        CliResult r = CliHarness.InProcess("run", file, "--json", json, "--csv", csv, "--plot", png);

        Assert.True(r.Exit == 0, r.Err);
        RunSummary s = RunSummary.FromJson(File.ReadAllText(json));
        Assert.True(s.AccountingOk, string.Join("; ", s.AccountingProblems));
        VmTotals cache = s.Vms.Single(v => v.Name == "cache"), hungry = s.Vms.Single(v => v.Name == "hungry");
        Assert.True(cache.Figure("pageCachePages") > 0, "no page-cache pages at the end");
        Assert.True(cache.Figure("pageCacheDroppedPages") > 0, "the guest never dropped a cache page");
        Assert.True(cache.Figure("pageCacheRefaults") > 0, "no dropped page was read again");
        Assert.True(cache.Figure("dirtyWritebacks") > 0, "no dirty page was written back");
        Assert.Equal(((double?)0, (double?)0, (double?)0, (double?)0), (hungry.Figure("pageCachePages"), hungry.Figure("pageCacheDroppedPages"), hungry.Figure("pageCacheRefaults"), hungry.Figure("dirtyWritebacks")));
        foreach (string key in new[] { "\"pageCachePages\":", "\"pageCacheDroppedPages\":", "\"pageCacheRefaults\":", "\"dirtyWritebacks\":" })
            Assert.Contains(key, File.ReadAllText(json));

        string[] rows = File.ReadAllLines(csv);
        string[] header = rows[0].Split(',');
        string[] last = rows.Last(l => l.Split(',')[1] == "cache").Split(',');
        int Col(string name) => Array.IndexOf(header, name);
        Assert.Equal(($"{cache.Figure("pageCachePages")}", $"{cache.Figure("pageCacheDroppedPages")}", $"{cache.Figure("pageCacheRefaults")}", $"{cache.Figure("dirtyWritebacks")}"),
            (last[Col("pageCachePages")], last[Col("pageCacheDroppedPages")], last[Col("pageCacheRefaults")], last[Col("dirtyWritebacks")]));
        Assert.True(new FileInfo(png).Length > 0, "no plot was written");
    }

    [Fact]
    public void In_the_example_the_file_vm_gives_memory_to_its_balloon_without_guest_swapping_and_the_anonymous_one_swaps()
    {
        string example = TraceWorkloadTests.Examples("pagecache.json");
        if (!File.Exists(example)) Assert.Skip($"the repository's examples/ is not beside the tests ({example})");
        using var dir = new TempDir();
        string json = Path.Combine(dir.Path, "s.json");

        CliResult r = CliHarness.InProcess("run", example, "--no-plot", "--json", json);

        Assert.True(r.Exit == 0, r.Err);
        RunSummary s = RunSummary.FromJson(File.ReadAllText(json));
        VmTotals file = s.Vms.Single(v => v.Name == "file"), anon = s.Vms.Single(v => v.Name == "anon");
        Assert.True(file.BalloonInflatedPages > 0 && anon.BalloonInflatedPages > 0, "the host took nothing back: the example shows nothing");
        Assert.Equal(0UL, file.GuestPageOuts);
        Assert.True(file.Figure("pageCacheDroppedPages") > 0);
        Assert.True(anon.GuestPageOuts > 0, "the anonymous VM gave its balloon pages without swapping");
    }
}
