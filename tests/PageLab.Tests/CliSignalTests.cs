// The real `pagelab run` as a child process, stopped with `kill`: SIGINT and SIGTERM end it at a tick
// boundary with a trace of whole JSON lines ending in `interrupted`, a plot, a summary, no temporary
// files, exit 130 / 143; a second SIGINT exits at once and still leaves only whole lines.
using System.Diagnostics;
using System.Text.Json;
using PageLab.Lab.Observation;

namespace PageLab.Tests;

public class CliSignalTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(90);

    [Theory]
    [InlineData("INT", 130, "SIGINT")]
    [InlineData("TERM", 143, "SIGTERM")]
    public void A_signal_mid_run_ends_it_at_a_tick_boundary_with_a_whole_trace_a_plot_and_no_temporary_files(string signal, int exitCode, string name)
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("signals are sent with the kill command (Linux)");
        using var dir = new TempDir();
        (string trace, string plot, string tmp) = Outputs(dir);
        string json = Path.Combine(dir.Path, "summary.json");
        using ChildCli child = CliHarness.Start(dir.Path, tmp, "run", "--ticks", "1000000", "--trace", trace, "--plot", plot, "--json", json);
        Assert.True(child.WaitUntil(() => TraceReaches(CliHarness.Partial(trace), 20), Patience), $"the run did not reach tick 20; stderr: {child.Err}");

        child.Signal(signal);
        int exit = child.WaitForExit(Patience);

        Assert.True(exit == exitCode, $"exit {exit}, expected {exitCode}; stderr: {child.Err}");
        List<JsonElement> events = WholeJsonLines(trace);
        JsonElement last = events[^1];
        Assert.Equal("interrupted", last.GetProperty("kind").GetString());
        Assert.Equal(name, last.GetProperty("detail").GetString());
        int tick = last.GetProperty("tick").GetInt32();
        Assert.InRange(tick, 20, 999_999);
        Assert.Equal(1, events.Count(e => e.GetProperty("kind").GetString() == "interrupted"));
        Assert.DoesNotContain(events, e => e.GetProperty("kind").GetString() == "end");
        Assert.All(events, e => Assert.True(e.GetProperty("tick").GetInt32() <= tick, $"an event after the interruption: {e}"));
        Assert.Contains($"pagelab: interrupted at tick {tick} of 1000000 ({name})", child.Err);
        AssertPng(plot);
        Assert.Contains($"plot: {plot}", child.Out);
        Assert.Empty(PageLabFiles(tmp));
        RunSummary summary = RunSummary.FromJson(File.ReadAllText(json));
        Assert.Equal((name, tick, 1_000_000), (summary.Interrupted, summary.TicksRun, summary.Ticks));
        Assert.Equal(last.GetProperty("frames").GetInt64(), summary.Host.FramesMovedBetweenVms);
    }

    [Fact]
    public void A_second_sigint_exits_at_once_keeping_the_old_trace_and_plot_and_leaving_no_partial_file()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("signals are sent with the kill command (Linux)");
        using var dir = new TempDir();
        (string trace, string plot, string tmp) = Outputs(dir);
        File.WriteAllText(trace, "old trace\n");
        File.WriteAllText(plot, "old plot");
        using ChildCli child = CliHarness.Start(dir.Path, tmp, "run", "--ticks", "1000000", "--trace", trace, "--plot", plot);
        Assert.True(child.WaitUntil(() => TraceReaches(CliHarness.Partial(trace), 20), Patience), $"the run did not reach tick 20; stderr: {child.Err}");

        child.Signal("INT");
        // The first is handled (the run winds down: last tick, trace, tables, plot); the second cuts that short.
        Assert.True(child.WaitUntil(() => child.Err.Contains("stopping after this tick"), Patience), $"no sign of the first SIGINT; stderr: {child.Err}");
        Thread.Sleep(400); // past the debounce: this is a second Ctrl-C, not the first one delivered twice
        var clock = Stopwatch.StartNew();
        // (The run may have finished winding down meanwhile: then there is no process left to signal.)
        using (var kill = Process.Start("kill", ["-s", "INT", $"{child.Process.Id}"])!) kill.WaitForExit();
        int exit = child.WaitForExit(Patience);

        Assert.True(exit == 130, $"exit {exit}; stderr: {child.Err}");
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(10), $"took {clock.Elapsed.TotalSeconds:0.0} s to exit after the second SIGINT");
        if (child.Err.Contains("pagelab: SIGINT again: exiting at once"))
        {
            // Cut short: each output is the old file or a whole new one, never a partial new one.
            string text = File.ReadAllText(trace);
            if (text != "old trace\n") Assert.Equal("interrupted", WholeJsonLines(trace)[^1].GetProperty("kind").GetString());
            if (File.ReadAllText(plot) != "old plot") AssertPng(plot);
        }
        Assert.False(File.Exists(CliHarness.Partial(trace)), "the partial trace was left behind");
        Assert.False(File.Exists(CliHarness.Partial(plot)), "the partial plot was left behind");
        Assert.Empty(PageLabFiles(tmp));
    }

    [Fact]
    public void A_sigint_delivered_twice_at_once_counts_as_one_and_the_run_ends_with_its_summary()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("signals are sent with the kill command (Linux)");
        using var dir = new TempDir();
        (string trace, _, string tmp) = Outputs(dir);
        string json = Path.Combine(dir.Path, "s.json");
        using ChildCli child = CliHarness.Start(dir.Path, tmp, "run", "--ticks", "1000000", "--no-plot", "--trace", trace, "--json", json);
        Assert.True(child.WaitUntil(() => TraceReaches(CliHarness.Partial(trace), 20), Patience), $"the run did not reach tick 20; stderr: {child.Err}");

        // As `timeout -s INT` does: the child, then its process group, microseconds apart.
        using (var kill = Process.Start("sh", ["-c", $"kill -s INT {child.Process.Id}; kill -s INT {child.Process.Id}"])!) kill.WaitForExit();
        int exit = child.WaitForExit(Patience);

        Assert.True(exit == 130, $"exit {exit}; stderr: {child.Err}");
        Assert.DoesNotContain("exiting at once", child.Err);
        Assert.Contains("pagelab: interrupted at tick", child.Err);
        Assert.Equal("SIGINT", RunSummary.FromJson(File.ReadAllText(json)).Interrupted);
        Assert.Equal("interrupted", WholeJsonLines(trace)[^1].GetProperty("kind").GetString());
    }

    [Fact]
    public void A_sigint_during_the_live_table_in_a_terminal_leaves_the_cursor_shown()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("signals are sent with the kill command (Linux)");
        if (!File.Exists("/usr/bin/script")) Assert.Skip("needs script(1) from util-linux for a pseudo-terminal");
        using var dir = new TempDir();
        (string trace, _, string tmp) = Outputs(dir);
        string typescript = Path.Combine(dir.Path, "terminal.out");
        // script(1) gives pagelab a pseudo-terminal (so the live table runs) and records what it drew; -e: its exit code.
        string command = $"exec dotnet exec '{CliHarness.Dll}' run --ticks 1000000 --no-plot --trace '{trace}'";
        using ChildCli terminal = CliHarness.StartProgram("script", dir.Path, tmp, ["-qefc", command, typescript]);
        Assert.True(terminal.WaitUntil(() => TraceReaches(CliHarness.Partial(trace), 20), Patience), $"the run did not reach tick 20; output: {terminal.Out}");
        string children = File.ReadAllText($"/proc/{terminal.Process.Id}/task/{terminal.Process.Id}/children").Trim();
        Assert.True(int.TryParse(children, out int pagelab), $"script's children: '{children}'");

        using (var kill = Process.Start("kill", ["-s", "INT", $"{pagelab}"])!) kill.WaitForExit();
        int exit = terminal.WaitForExit(Patience);

        string drawn = File.ReadAllText(typescript);
        Assert.True(exit == 130, $"exit {exit}; terminal: {drawn[Math.Max(0, drawn.Length - 400)..]}");
        int hidden = drawn.LastIndexOf("\u001b[?25l", StringComparison.Ordinal), shown = drawn.LastIndexOf("\u001b[?25h", StringComparison.Ordinal);
        Assert.True(hidden >= 0, "the live table never hid the cursor (not a terminal?)");
        Assert.True(shown > hidden, "the cursor is still hidden after the run");
        Assert.Contains("interrupted at tick", drawn);
        Assert.Equal("interrupted", WholeJsonLines(trace)[^1].GetProperty("kind").GetString());
    }

    private static (string Trace, string Plot, string Tmp) Outputs(TempDir dir)
    {
        string tmp = Path.Combine(dir.Path, "tmp");
        Directory.CreateDirectory(tmp);
        return (Path.Combine(dir.Path, "run.jsonl"), Path.Combine(dir.Path, "run.png"), tmp);
    }

    // True once the trace holds an event of tick n (decisions come every 10 ticks, so every tenth tick has one).
    private static bool TraceReaches(string trace, int n)
    {
        try
        {
            using var reader = new StreamReader(new FileStream(trace, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete));
            return reader.ReadToEnd().Contains($"\"tick\":{n},");
        }
        catch (IOException)
        {
            // Not there yet, or pagelab's check that it can write the path (it creates the file exclusively
            // and removes it, before the run) holds it at this moment.
            return false;
        }
    }

    /// <summary>Every line of the trace parsed as JSON; fails on a partial last line or any line that is not JSON.</summary>
    private static List<JsonElement> WholeJsonLines(string trace)
    {
        string text = File.ReadAllText(trace);
        Assert.True(text.Length > 0, "the trace is empty");
        Assert.True(text.EndsWith('\n'), $"the trace ends inside a line: ...{text[Math.Max(0, text.Length - 80)..]}");
        var events = new List<JsonElement>();
        string[] lines = text[..^1].Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            try
            {
                using JsonDocument doc = JsonDocument.Parse(lines[i]);
                events.Add(doc.RootElement.Clone());
            }
            catch (JsonException e)
            {
                Assert.Fail($"trace line {i + 1} of {lines.Length} is not JSON ({e.Message}): {lines[i]}");
            }
        }
        return events;
    }

    private static void AssertPng(string path)
    {
        byte[] png = File.ReadAllBytes(path);
        Assert.True(png.Length > 1000, $"{path}: {png.Length} bytes is no plot");
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png[..4]);
        Assert.Equal("IEND", System.Text.Encoding.ASCII.GetString(png, png.Length - 8, 4)); // written to the end
    }

    // What PageLab left in the child's temporary directory (the runtime's own files are not PageLab's).
    private static IEnumerable<string> PageLabFiles(string tmp) =>
        Directory.EnumerateFileSystemEntries(tmp).Where(p => Path.GetFileName(p).StartsWith("pagelab", StringComparison.Ordinal));
}
