// `pagelab run --ticks N` shorter than the scenario's injections: the built-in scenario drops (and names)
// the injections past N and runs; a scenario file is refused with the way out named.
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class CliTicksTests
{
    [Fact]
    public void A_short_built_in_run_drops_the_injections_past_its_end_and_names_them_in_one_line()
    {
        using var dir = new TempDir();
        string trace = Path.Combine(dir.Path, "t.jsonl");

        CliResult r = CliHarness.InProcess("run", "--ticks", "120", "--no-plot", "--trace", trace);

        Assert.True(r.Exit == 0, $"exit {r.Exit}; stderr: {r.Err}");
        string note = Assert.Single(r.ErrLines);
        Assert.Equal("pagelab: note: --ticks 120 drops 2 of the built-in scenario's 3 injections, those past tick 120: " +
                     "tick 150 WholePage into growing's kernel, tick 200 ByteRange into idle's user", note);
        List<RunEvent> events = RunTraceWriter.Read(trace);
        Assert.Equal([100], events[0].Scenario!.Injections.Select(j => j.Tick));
        Assert.Equal([100], events.Where(e => e.Kind == RunEventKind.Injection).Select(e => e.Tick));
        Assert.Equal((120, RunEventKind.End), (events[^1].Tick, events[^1].Kind));
    }

    [Fact]
    public void The_built_in_scenario_unchanged_by_a_long_enough_run_says_nothing_about_injections()
    {
        Scenario s = PageLab.Cli.RunCommand.WithTicks(Scenario.Default, 200, file: null);
        Assert.Equal(Scenario.Default.Injections, s.Injections);
        Assert.Equal(200, s.Ticks);
    }

    [Fact]
    public void A_scenario_file_with_an_injection_past_ticks_is_refused_naming_the_way_out()
    {
        using var dir = new TempDir();
        string file = Path.Combine(dir.Path, "s.json");
        File.WriteAllText(file, (RunOutputTests.Short(ticks: 40) with
        {
            Injections = [new InjectionSpec { Tick = 10, Vm = "idle" }, new InjectionSpec { Tick = 30, Vm = "active" }],
        }).ToJson());

        CliResult r = CliHarness.InProcess("run", file, "--ticks", "20", "--no-plot");

        Assert.Equal(2, r.Exit);
        Assert.Equal($"pagelab: error: --ticks 20: injections[1] of {file} is at tick 30, after the run's end; " +
                     "give --ticks 30 or more, or remove the injection from the file", Assert.Single(r.ErrLines));
    }
}
