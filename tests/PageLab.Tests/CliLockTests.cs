// Output files are locked while a run writes them: a second `pagelab` process given the same file is
// refused (exit 2, naming the option and file) and the first one's output stays whole.
using System.Text.Json;
using PageLab.Lab.Observation;

namespace PageLab.Tests;

public class CliLockTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    [Fact]
    public void A_second_process_writing_the_same_trace_is_refused_and_the_first_trace_stays_whole()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("output locks are Linux open-file-description locks; signals are sent with kill");
        using var dir = new TempDir();
        string trace = Path.Combine(dir.Path, "run.jsonl"), json = Path.Combine(dir.Path, "second.json");
        using ChildCli first = CliHarness.Start(dir.Path, dir.Path, "run", "--ticks", "1000000", "--no-plot", "--trace", trace);
        Assert.True(first.WaitUntil(() => File.Exists(CliHarness.Partial(trace)) && new FileInfo(CliHarness.Partial(trace)).Length > 10_000, Patience), $"the first run wrote no trace; stderr: {first.Err}");

        CliResult second = CliHarness.Run(new Dictionary<string, string>(), dir.Path, 60, "run", "--ticks", "5", "--no-plot", "--json", json, "--trace", trace);

        Assert.Equal(2, second.Exit);
        // (The first stderr line notes the built-in scenario's injections past tick 5.)
        Assert.Equal($"pagelab: error: --trace {trace}: another PageLab process is writing this file; wait for it to end or give another file", second.ErrLines[^1]);
        Assert.False(File.Exists(json), "the refused run left its --json file behind");
        Assert.DoesNotContain("tick", second.Out);

        first.Signal("TERM");
        Assert.Equal(143, first.WaitForExit(Patience));
        string[] lines = File.ReadAllText(trace).Split('\n');
        Assert.Equal("", lines[^1]);
        foreach (string line in lines[..^1])
            using (JsonDocument.Parse(line)) { }
        using (JsonDocument last = JsonDocument.Parse(lines[^2])) Assert.Equal("interrupted", last.RootElement.GetProperty("kind").GetString());
        Assert.Single(lines, l => l.Contains("\"kind\":\"run\""));

        // Once the first process has ended, the file is free.
        CliResult third = CliHarness.Run(new Dictionary<string, string>(), dir.Path, 60, "run", "--ticks", "5", "--no-plot", "--trace", trace);
        Assert.True(third.Exit == 0, $"exit {third.Exit}; stderr: {third.Err}");
    }

    [Fact]
    public void A_second_process_writing_the_same_json_summary_is_refused()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("output locks are Linux open-file-description locks; signals are sent with kill");
        using var dir = new TempDir();
        string json = Path.Combine(dir.Path, "s.json"), trace = Path.Combine(dir.Path, "t.jsonl");
        using ChildCli first = CliHarness.Start(dir.Path, dir.Path, "run", "--ticks", "1000000", "--no-plot", "--trace", trace, "--json", json);
        Assert.True(first.WaitUntil(() => File.Exists(CliHarness.Partial(trace)) && new FileInfo(CliHarness.Partial(trace)).Length > 1000, Patience), $"the first run did not start; stderr: {first.Err}");

        CliResult second = CliHarness.Run(new Dictionary<string, string>(), dir.Path, 60, "run", "--ticks", "5", "--no-plot", "--json", json);

        Assert.Equal(2, second.Exit);
        Assert.Contains($"--json {json}: another PageLab process is writing this file", second.Err);
        first.Signal("INT");
        Assert.Equal(130, first.WaitForExit(Patience));
        Assert.Equal("SIGINT", PageLab.Lab.Observation.RunSummary.FromJson(File.ReadAllText(json)).Interrupted);
    }
}
