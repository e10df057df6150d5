// What a run leaves behind: the timeline PNG at its expected size, a trace that is the same byte for byte
// for the same seed, frame moves that add up to the scheduler's count, and events other layers report.
using System.Buffers.Binary;
using PageLab.Report;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class RunOutputTests
{
    internal static Scenario Short(int seed = 7, int ticks = 40) => new()
    {
        Name = "short", HostPages = 2048, Ticks = ticks, SamplePeriodTicks = 5, Seed = seed,
        Vms =
        [
            new VmSpec { Name = "idle", Pages = 1536, Workload = new WorkloadSpec { Kind = "idle", Pages = 1000, TouchesPerTick = 5 } },
            new VmSpec { Name = "active", Pages = 1536, Workload = new WorkloadSpec { Kind = "active", Pages = 1300, TouchesPerTick = 300 } },
        ],
    };

    [Fact]
    public void A_short_run_renders_a_timeline_png_of_the_expected_size()
    {
        using var dir = new TempDir();
        RunTimeline timeline;
        using (var runner = new ScenarioRunner(Short()))
        {
            timeline = RunTimeline.Attach(runner);
            foreach (TickSnapshot _ in runner.Run()) { }
        }
        string path = Path.Combine(dir.Path, "plots", "short.png");

        PlotImage image = TimelinePlot.SavePng(timeline, path, widthPx: 800, panelHeightPx: 220);

        Assert.True(File.Exists(path), $"no PNG at {path}");
        byte[] png = File.ReadAllBytes(path);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, png[..8]);
        // IHDR follows the signature: length, "IHDR", then width and height (big-endian).
        Assert.Equal("IHDR", System.Text.Encoding.ASCII.GetString(png, 12, 4));
        Assert.Equal(800, BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)));
        Assert.Equal(2 * 220, BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20)));
        Assert.Equal((path, 800, 440), (image.Path, image.WidthPx, image.HeightPx));
        Assert.True(png.Length > 10_000, $"a {png.Length}-byte PNG is too small to hold two panels of lines");
        Assert.Equal(Enumerable.Range(0, 41), timeline.Ticks);                  // boot (tick 0) and every tick
    }

    [Fact]
    public void The_trace_of_a_seeded_run_is_the_same_byte_for_byte_on_a_second_run()
    {
        using var dir = new TempDir();
        string first = Path.Combine(dir.Path, "first.jsonl"), second = Path.Combine(dir.Path, "second.jsonl");

        RunTraced(Short(seed: 11), first);
        RunTraced(Short(seed: 11), second);

        byte[] a = File.ReadAllBytes(first), b = File.ReadAllBytes(second);
        Assert.True(a.AsSpan().SequenceEqual(b), $"traces differ: {a.Length} and {b.Length} bytes");
        List<RunEvent> events = RunTraceWriter.Read(first);
        Assert.Equal(RunEventKind.Run, events[0].Kind);
        Assert.Equal(11, events[0].Scenario!.Seed);
        Assert.Equal(RunEventKind.End, events[^1].Kind);
        Assert.Contains(events, e => e.Kind == RunEventKind.Decision);
        Assert.Contains(events, e => e.Kind == RunEventKind.Transfer);
        Assert.Equal(events.Select(e => e.Tick).Order(), events.Select(e => e.Tick));   // in time order
    }

    [Fact]
    public void Another_seed_gives_another_trace()
    {
        using var dir = new TempDir();
        string a = Path.Combine(dir.Path, "a.jsonl"), b = Path.Combine(dir.Path, "b.jsonl");

        RunTraced(Short(seed: 1), a);
        RunTraced(Short(seed: 2), b);

        Assert.NotEqual(File.ReadAllText(a), File.ReadAllText(b));
    }

    [Fact]
    public void Transfers_in_the_trace_add_up_to_the_frames_the_scheduler_moved_and_each_inflate_is_accounted_for()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "t.jsonl");

        long moved = RunTraced(Short(), path);

        List<RunEvent> events = RunTraceWriter.Read(path);
        Assert.Equal(moved, events.Where(e => e.Kind == RunEventKind.Transfer).Sum(e => e.Frames!.Value));
        Assert.True(moved > 100, $"moved {moved} frames");
        foreach (IGrouping<int, RunEvent> tick in events.GroupBy(e => e.Tick).Where(g => g.Key > 0))
            foreach (RunEvent inflate in tick.Where(e => e.Kind == RunEventKind.Inflate))
            {
                // Frames a balloon gave up either went to another VM or back to the arena, in the same tick.
                long away = tick.Where(e => e.Kind is RunEventKind.Transfer or RunEventKind.Return && e.From == inflate.Vm).Sum(e => e.Frames!.Value);
                Assert.Equal(inflate.Frames, away);
            }
        Assert.Equal(moved, events[^1].Frames);
    }

    [Fact]
    public void An_event_reported_by_another_layer_reaches_the_trace_and_the_timeline_markers()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "t.jsonl");
        using var runner = new ScenarioRunner(Short(ticks: 10));
        RunTimeline timeline = RunTimeline.Attach(runner);
        using (var trace = new RunTraceWriter(runner, path))
        {
            runner.Boot();
            runner.Advance();
            runner.Record(new RunEvent { Tick = 1, Kind = RunEventKind.Injection, Vm = "active", Detail = "test marker" });
            while (runner.Tick < 10) runner.Advance();
        }

        RunEvent marker = Assert.Single(timeline.Markers);
        Assert.Equal((1, "active", "test marker"), (marker.Tick, marker.Vm, marker.Detail));
        Assert.Contains("""{"tick":1,"kind":"injection","vm":"active","detail":"test marker"}""", File.ReadAllLines(path));
        Assert.Equal(1, timeline.Summarize().Single(v => v.Name == "active").Markers);
        TimelinePlot.SavePng(timeline, Path.Combine(dir.Path, "marked.png"));
    }

    [Fact]
    public void A_runner_refuses_to_record_its_own_kinds_of_event_or_an_event_at_another_tick()
    {
        using var runner = new ScenarioRunner(Short(ticks: 5));
        runner.Boot();
        runner.Advance();

        var wrongKind = Assert.Throws<ArgumentException>(() => runner.Record(new RunEvent { Tick = 1, Kind = RunEventKind.Transfer }));
        Assert.Contains("got Transfer", wrongKind.Message);
        var wrongTick = Assert.Throws<ArgumentException>(() => runner.Record(new RunEvent { Tick = 3, Kind = RunEventKind.Recovery }));
        Assert.Contains("event at tick 3 reported at tick 1", wrongTick.Message);
        var wrongVm = Assert.Throws<ArgumentException>(() => runner.Record(new RunEvent { Tick = 1, Kind = RunEventKind.Recovery, Vm = "nosuch" }));
        Assert.Contains("'nosuch'", wrongVm.Message);
    }

    private static long RunTraced(Scenario s, string path)
    {
        using var runner = new ScenarioRunner(s);
        using (new RunTraceWriter(runner, path))
            foreach (TickSnapshot _ in runner.Run()) { }
        return runner.Scheduler.TransferredFrames;
    }
}

/// <summary>A temporary directory removed with everything in it, even when an assertion fails.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"pagelab-test-{Guid.NewGuid():N}");

    public void Dispose()
    {
        if (Directory.Exists(Path)) Directory.Delete(Path, recursive: true);
    }
}
