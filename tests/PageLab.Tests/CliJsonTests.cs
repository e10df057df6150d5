// `pagelab run --json FILE|-`: the run's summary as one JSON object whose figures agree with the run's
// trace, with every key documented in docs/run-summary.md; on stdout it is the only thing there.
using System.Text.Json;
using System.Text.RegularExpressions;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public partial class CliJsonTests
{
    private static string ShortFile(TempDir dir, int ticks = 30)
    {
        string file = Path.Combine(dir.Path, "short.json");
        File.WriteAllText(file, (RunOutputTests.Short(ticks: ticks) with
        {
            Injections = [new InjectionSpec { Tick = 10, Vm = "active", Kind = "MultiBit", Target = "kernel" }],
        }).ToJson());
        return file;
    }

    [Fact]
    public void Json_to_stdout_is_one_object_alone_on_stdout_agreeing_with_the_trace()
    {
        using var dir = new TempDir();
        string file = ShortFile(dir), trace = Path.Combine(dir.Path, "t.jsonl");

        CliResult r = CliHarness.InProcess("run", file, "--seed", "5", "--no-plot", "--trace", trace, "--json", "-");

        Assert.True(r.Exit == 0, $"exit {r.Exit}; stderr: {r.Err}");
        string line = Assert.Single(r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("summary of short", r.Err);   // the tables went to stderr
        RunSummary summary = RunSummary.FromJson(line);
        List<RunEvent> events = RunTraceWriter.Read(trace);
        Assert.Equal(("short", file, 5, true, 30, 30, null), (summary.Scenario, summary.ScenarioFile, summary.Seed, summary.Adaptive, summary.Ticks, summary.TicksRun, summary.Interrupted));
        Assert.True(summary.AccountingOk);
        Assert.Empty(summary.AccountingProblems);
        Assert.Equal(events[^1].Frames, summary.Host.FramesMovedBetweenVms);
        Assert.Equal(2048UL, summary.Host.HostPages);
        Assert.Equal(["idle", "active"], summary.Vms.Select(v => v.Name));
        foreach (VmTotals v in summary.Vms)
        {
            Assert.Equal(events.Where(e => e.Kind == RunEventKind.Transfer && e.To == v.Name).Sum(e => e.Frames), v.FramesIn);
            Assert.Equal(events.Where(e => e.Kind == RunEventKind.Transfer && e.From == v.Name).Sum(e => e.Frames), v.FramesOut);
            Assert.Equal(events.Count(e => e.Kind == RunEventKind.Injection && e.Vm == v.Name), v.Injections);
            Assert.Equal(events.Where(e => e.Kind == RunEventKind.Decision && e.Vm == v.Name).Last().AllocationPages, v.AllocationEndPages);
            Assert.InRange(v.AllocationEndPages, v.AllocationMinPages, v.AllocationMaxPages);
        }
        Assert.Equal((1, 1), (summary.Vms[1].Injections, summary.Vms[1].Recoveries));
        Assert.True(summary.Timings.TotalSeconds >= summary.Timings.BootSeconds + summary.Timings.TicksSeconds);
        Assert.True(summary.Timings.MeanTickMilliseconds > 0);
    }

    [Fact]
    public void Json_to_a_file_holds_the_same_object_and_a_success_line_names_it()
    {
        using var dir = new TempDir();
        string file = ShortFile(dir), json = Path.Combine(dir.Path, "summary.json");

        CliResult r = CliHarness.InProcess("run", file, "--no-plot", "--json", json);

        Assert.True(r.Exit == 0, $"exit {r.Exit}; stderr: {r.Err}");
        string text = File.ReadAllText(json);
        Assert.EndsWith("}\n", text);
        Assert.Single(text.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        RunSummary summary = RunSummary.FromJson(text);
        Assert.Equal(summary.ToJson(), text.TrimEnd('\n'));
        Assert.Equal(30, summary.TicksRun);
    }

    [Fact]
    public void Compare_with_json_to_stdout_writes_one_line_per_policy_in_the_order_given()
    {
        using var dir = new TempDir();
        CliResult r = CliHarness.InProcess("run", "--compare", ShortFile(dir, ticks: 15), "--no-plot", "--json", "-");

        Assert.True(r.Exit == 0, $"exit {r.Exit}; stderr: {r.Err}");
        string[] lines = r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(["static", "esx", "pagelab", "mrc"], lines.Select(l => RunSummary.FromJson(l).Policy));
        Assert.Equal([false, true, true, true], lines.Select(l => RunSummary.FromJson(l).Adaptive));

        r = CliHarness.InProcess("run", ShortFile(dir, ticks: 15), "--compare", "pagelab,static", "--no-plot", "--json", "-");
        Assert.True(r.Exit == 0, $"exit {r.Exit}; stderr: {r.Err}");
        Assert.Equal(["pagelab", "static"], r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => RunSummary.FromJson(l).Policy));
    }

    [Fact]
    public void Compare_takes_a_users_class_by_its_assembly_qualified_name_and_refuses_two_runs_writing_one_file()
    {
        using var dir = new TempDir();
        string keep = $"{typeof(KeepAllocationsPolicy).FullName}, {typeof(KeepAllocationsPolicy).Assembly.GetName().Name}";
        CliResult r = CliHarness.InProcess("run", ShortFile(dir, ticks: 12), "--compare", $"static,{keep}", "--no-plot", "--json", "-");
        Assert.True(r.Exit == 0, $"exit {r.Exit}; stderr: {r.Err}");
        Assert.Equal(["static", keep], r.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => RunSummary.FromJson(l).Policy));

        r = CliHarness.InProcess("run", ShortFile(dir, ticks: 12), "--compare", $"{keep},PageLab.Tests.KeepAllocationsPolicy, Other", "--no-plot");
        Assert.Equal(2, r.Exit);
        Assert.Contains("--compare: two of the policies would write the same files", r.Err);
    }

    [Fact]
    public void Every_key_of_the_summary_is_documented_and_every_documented_key_is_written()
    {
        using var dir = new TempDir();
        CliResult r = CliHarness.InProcess("run", ShortFile(dir, ticks: 12), "--no-plot", "--json", "-");
        Assert.True(r.Exit == 0, $"exit {r.Exit}; stderr: {r.Err}");
        using JsonDocument doc = JsonDocument.Parse(r.Out);
        var written = new SortedSet<string>(Keys(doc.RootElement));
        // A run that shares writes the keys of its `sharing` object too (null in the run above).
        string sameImage = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "examples", "same-image.json"));
        if (File.Exists(sameImage))
        {
            CliResult shared = CliHarness.InProcess("run", sameImage, "--ticks", "3", "--no-plot", "--json", "-");
            Assert.True(shared.Exit == 0, $"exit {shared.Exit}; stderr: {shared.Err}");
            using JsonDocument sharedDoc = JsonDocument.Parse(shared.Out);
            Assert.NotEqual(JsonValueKind.Null, sharedDoc.RootElement.GetProperty("sharing").ValueKind);
            written.UnionWith(Keys(sharedDoc.RootElement));
        }
        // A VM running an application writes the keys of its `app` object too (null elsewhere).
        string sqlite = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "examples", "sqlite.json"));
        if (File.Exists(sqlite) && PageLab.Core.Applications.SqliteAllocator.Unsupported is null)
        {
            CliResult app = CliHarness.InProcess("run", sqlite, "--ticks", "2", "--no-plot", "--json", "-");
            Assert.True(app.Exit == 0, $"exit {app.Exit}; stderr: {app.Err}");
            using JsonDocument appDoc = JsonDocument.Parse(app.Out);
            written.UnionWith(Keys(appDoc.RootElement));
        }

        string docsPath = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "docs", "run-summary.md"));
        // The Windows lane runs a published test exe with no source tree beside it.
        if (!File.Exists(docsPath) && OperatingSystem.IsWindows()) Assert.Skip($"the repository's docs/ is not beside the published tests ({docsPath})");
        string docs = File.ReadAllText(docsPath);
        var documented = new SortedSet<string>(DocumentedKey().Matches(docs).Select(m => m.Groups[1].Value));

        Assert.Equal(documented, written);
    }

    [Fact]
    public void A_json_file_in_a_missing_directory_is_refused_before_the_run()
    {
        using var dir = new TempDir();
        string json = Path.Combine(dir.Path, "nope", "s.json");
        CliResult r = CliHarness.InProcess("run", "--no-plot", "--json", json);
        Assert.Equal(2, r.Exit);
        Assert.Contains($"--json {json}: the directory {Path.Combine(dir.Path, "nope")} does not exist", r.Err);
        Assert.Empty(r.Out);
    }

    [Fact]
    public void Json_and_trace_naming_one_file_are_refused()
    {
        using var dir = new TempDir();
        string same = Path.Combine(dir.Path, "out.json");
        CliResult r = CliHarness.InProcess("run", "--no-plot", "--trace", same, "--json", same);
        Assert.Equal(2, r.Exit);
        Assert.Contains("--trace and --json name the same file", r.Err);
    }

    // Every key of an object and of the objects inside it (the first element of a list stands for all).
    private static IEnumerable<string> Keys(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => e.EnumerateObject().SelectMany(p => Keys(p.Value).Prepend(p.Name)),
        JsonValueKind.Array => e.GetArrayLength() > 0 ? Keys(e[0]) : [],
        _ => [],
    };

    // A table row of docs/run-summary.md: "| `key` | ...".
    [GeneratedRegex(@"^\| `(\w+)` \|", RegexOptions.Multiline)]
    private static partial Regex DocumentedKey();
}
