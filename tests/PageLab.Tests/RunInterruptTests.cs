// A run stopped between ticks: its last event is `interrupted` at that tick, and a trace writer that is
// abandoned on the way out leaves whole lines only and takes no event after.
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class RunInterruptTests
{
    [Fact]
    public void An_interrupted_run_ends_its_trace_with_one_interrupted_event_at_the_current_tick()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "t.jsonl");
        using (var runner = new ScenarioRunner(RunOutputTests.Short(ticks: 40)))
        using (new RunTraceWriter(runner, path))
        {
            runner.Boot();
            for (int i = 0; i < 12; i++) runner.Advance();
            runner.Interrupt("SIGINT");
        }

        List<RunEvent> events = RunTraceWriter.Read(path);
        Assert.Equal(RunEventKind.Interrupted, events[^1].Kind);
        Assert.Equal((12, "SIGINT"), (events[^1].Tick, events[^1].Detail));
        Assert.DoesNotContain(events, e => e.Kind == RunEventKind.End);
        Assert.EndsWith("{\"tick\":12,\"kind\":\"interrupted\",\"frames\":" + events[^1].Frames + ",\"detail\":\"SIGINT\"}\n", File.ReadAllText(path));
    }

    [Fact]
    public void A_run_that_reached_its_last_tick_cannot_be_interrupted()
    {
        using var runner = new ScenarioRunner(RunOutputTests.Short(ticks: 3));
        foreach (TickSnapshot _ in runner.Run()) { }

        var e = Assert.Throws<InvalidOperationException>(() => runner.Interrupt("SIGINT"));
        Assert.Contains("already ended at tick 3", e.Message);
    }

    [Fact]
    public void The_trace_on_disk_holds_whole_lines_after_every_tick_and_nothing_after_it_is_abandoned()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "t.jsonl");
        using var runner = new ScenarioRunner(RunOutputTests.Short(ticks: 40));
        using var trace = new RunTraceWriter(runner, path);
        int raised = 0;
        runner.EventRaised += _ => raised++;
        runner.Boot();
        for (int i = 0; i < 10; i++)
        {
            runner.Advance();
            string onDisk = ReadShared(path);
            Assert.EndsWith("\n", onDisk);
            Assert.Equal(raised, onDisk.Count(c => c == '\n')); // every event of the tick is on disk, as whole lines
        }

        trace.Abandon();
        long length = new FileInfo(path).Length;
        runner.Advance();
        trace.Dispose();

        Assert.Equal(length, new FileInfo(path).Length);
        Assert.All(File.ReadAllLines(path), l => RunEvent.FromJson(l));
    }

    private static string ReadShared(string path)
    {
        using var reader = new StreamReader(new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite));
        return reader.ReadToEnd();
    }
}
