// `campaign`, `sharing` and `campaign model` under SIGINT / SIGTERM, as real child processes: they stop with
// 130 / 143, a line saying what was done and the report of what they did, leave no temporary file and no
// partial --plot; a second signal exits at once.
using System.Diagnostics;

namespace PageLab.Tests;

public class CliStopTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(90);

    private static string Tmp(TempDir dir)
    {
        string tmp = Path.Combine(dir.Path, "tmp");
        Directory.CreateDirectory(tmp);
        return tmp;
    }

    private static IEnumerable<string> PageLabFiles(string tmp) =>
        Directory.EnumerateFileSystemEntries(tmp).Where(p => Path.GetFileName(p).StartsWith("pagelab", StringComparison.Ordinal));

    [Theory]
    [InlineData("TERM", 143, 1)]
    [InlineData("INT", 130, 1)]
    [InlineData("TERM", 143, 2)]
    public void A_campaign_stopped_by_a_signal_prints_its_partial_report_and_exits_with_its_code_writing_no_plot_and_leaving_no_files(string signal, int code, int signals)
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("signals are sent with the kill command (Linux)");
        using var dir = new TempDir();
        string tmp = Tmp(dir), plot = Path.Combine(dir.Path, "c.png");
        File.WriteAllText(plot, "old plot");
        using ChildCli child = CliHarness.Start(dir.Path, tmp, "campaign", "--injections", "1000000", "--plot", plot);
        Assert.True(child.WaitUntil(() => child.Out.Contains("campaign:"), Patience), $"the campaign did not start; stderr: {child.Err}");
        Thread.Sleep(1500); // into the injections

        child.Signal(signal);
        if (signals == 2)
        {
            Thread.Sleep(400); // past the debounce
            using (var kill = Process.Start("kill", ["-s", signal, $"{child.Process.Id}"])!) kill.WaitForExit();
        }
        int exit = child.WaitForExit(Patience);

        Assert.True(exit == code, $"exit {exit}; stderr: {child.Err}");
        if (signals == 1)
        {
            Assert.Contains("pagelab: interrupted after", child.Err);
            // The report of the injections made, checked against the shadow at the stop like a whole campaign's.
            Assert.Contains("recovered (pages, parity frames, free frames)", child.Out);
            Assert.Contains("frames retired", child.Out);
            Assert.Matches(@"stopped after [1-9][0-9]* of 1000000 errors", child.Out);
        }
        Assert.Equal("old plot", File.ReadAllText(plot));
        Assert.False(File.Exists(CliHarness.Partial(plot)), "the partial plot was left behind");
        Assert.Empty(PageLabFiles(tmp));
    }

    [Fact]
    public void A_run_killed_with_sigkill_leaves_no_empty_or_partial_output_and_keeps_the_old_summary()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("signals are sent with the kill command (Linux)");
        using var dir = new TempDir();
        string tmp = Tmp(dir), json = Path.Combine(dir.Path, "s.json"), csv = Path.Combine(dir.Path, "t.csv"), trace = Path.Combine(dir.Path, "t.jsonl");
        File.WriteAllText(json, "old summary");
        using ChildCli child = CliHarness.Start(dir.Path, tmp, "run", "--ticks", "1000000", "--no-plot", "--json", json, "--csv", csv, "--trace", trace);
        Assert.True(child.WaitUntil(() => File.Exists(CliHarness.Partial(trace)) && new FileInfo(CliHarness.Partial(trace)).Length > 1000, Patience),
            $"the run did not start; stderr: {child.Err}");

        child.Signal("KILL");
        child.WaitForExit(Patience);

        Assert.Equal("old summary", File.ReadAllText(json));
        Assert.False(File.Exists(csv), "a 0-byte --csv placeholder was left");
        Assert.False(File.Exists(trace), "a partial trace took the --trace name");
    }

    [Fact]
    public void Sharing_stopped_by_sigint_shows_the_experiments_done_and_exits_130()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("signals are sent with the kill command (Linux)");
        using var dir = new TempDir();
        string tmp = Tmp(dir);
        using ChildCli child = CliHarness.Start(dir.Path, tmp, "sharing", "--touches", "10000000");
        Thread.Sleep(3000); // into the first experiment (each takes about half a minute at this many accesses)

        child.Signal("INT");
        int exit = child.WaitForExit(TimeSpan.FromSeconds(180));

        Assert.True(exit == 130, $"exit {exit}; stderr: {child.Err}");
        Assert.Contains("experiments did not run", child.Err);
        Assert.Contains("frames taken back", child.Out);
        Assert.Empty(PageLabFiles(tmp));
    }

    [Fact]
    public void The_model_check_stops_between_rounds_on_the_first_sigint_and_reports_the_rounds_it_checked()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("signals are sent with the kill command (Linux)");
        using var dir = new TempDir();
        string tmp = Tmp(dir);
        using ChildCli child = CliHarness.Start(dir.Path, tmp, "campaign", "model", "--operations", "30000000", "--os-failures");
        Thread.Sleep(3000);

        var clock = Stopwatch.StartNew();
        child.Signal("INT");
        int exit = child.WaitForExit(Patience);

        Assert.True(exit == 130, $"exit {exit}; stderr: {child.Err}");
        Assert.Contains("pagelab: SIGINT: stopping after this round", child.Err);
        Assert.Matches(@"stopped after [1-9][0-9,]* of 10,000,000 rounds", child.Out);
        Assert.Contains("rounds checked (bytes, parity, frame accounting)", child.Out);
        Assert.Contains("OS calls, per kind", child.Out);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed.TotalSeconds:0.0} s");
        Assert.Empty(PageLabFiles(tmp));
    }

    [Theory]
    [InlineData(new[] { "run", "--no-plot", "--json", "" }, "--json: the file name is empty")]
    [InlineData(new[] { "campaign", "--plot", "" }, "--plot: the file name is empty")]
    [InlineData(new[] { "sweep", "x.json", "--out", "" }, "--out: the file name is empty")]
    [InlineData(new[] { "run", "--no-plot", "--json", "/proc/pagelab-x" }, "--json /proc/pagelab-x: not writable (no file can be created in /proc)")]
    [InlineData(new[] { "campaign", "model", "--operations", "2" }, "--operations 2: out of range (accepted: 3 to 30000000)")]
    [InlineData(new[] { "campaign", "model", "--os-failures", "--operations", "2" }, "--operations 2: out of range (accepted: 3 to 30000000)")]
    [InlineData(new[] { "campaign", "model", "--os-faults", "--operations", "2" }, "--operations 2: out of range (accepted: 3 to 30000000)")] // the option's first name
    public void Unusable_output_names_and_out_of_range_counts_are_usage_errors_naming_the_option(string[] args, string expected)
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("/proc is Linux");
        CliResult r = CliHarness.InProcess(args);
        Assert.True(r.Exit == 2, $"exit {r.Exit}; stderr: {r.Err}");
        Assert.Contains($"pagelab: error: {expected}", r.Err);
        foreach (string leak in CliHarness.DotNetLeaks) Assert.DoesNotContain(leak, r.Err);
    }

    [Fact]
    public void A_dangling_symlink_or_a_fifo_as_json_is_refused_before_the_run()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("symlinks and FIFOs (Linux)");
        using var dir = new TempDir();
        string link = Path.Combine(dir.Path, "dangling.json"), fifo = Path.Combine(dir.Path, "fifo.json");
        File.CreateSymbolicLink(link, Path.Combine(dir.Path, "missing.json"));
        Assert.Equal(0, Mono.Unix.Native.Syscall.mkfifo(fifo, Mono.Unix.Native.FilePermissions.DEFFILEMODE));

        CliResult a = CliHarness.InProcess("run", "--ticks", "2", "--no-plot", "--json", link);
        CliResult b = CliHarness.InProcess("run", "--ticks", "2", "--no-plot", "--json", fifo);

        Assert.Equal(2, a.Exit);
        Assert.Contains($"--json {link}: is a symlink to {Path.Combine(dir.Path, "missing.json")}, which does not exist", a.Err);
        Assert.Equal(2, b.Exit);
        Assert.Contains($"--json {fifo}: is not a regular file", b.Err);
    }

    [Fact]
    public void A_sweep_out_directory_that_cannot_be_created_names_the_option()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("/proc is Linux");
        using var dir = new TempDir();
        string s = Path.Combine(dir.Path, "s.json"), sweep = Path.Combine(dir.Path, "sweep.json");
        File.WriteAllText(s, RunOutputTests.Short(ticks: 3).ToJson());
        File.WriteAllText(sweep, $$"""{ "scenario": {{System.Text.Json.JsonSerializer.Serialize(s)}}, "grid": { "idleTax": [0] } }""");

        CliResult r = CliHarness.InProcess("sweep", sweep, "--out", "/proc/pagelab-x");

        Assert.Equal(2, r.Exit);
        Assert.Contains("--out /proc/pagelab-x: the directory cannot be created (/proc takes no new directories)", r.Err);
    }
}
