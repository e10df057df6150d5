// The phases workload kind: phases follow each other at the ticks they say, each touches only its region, a
// scan walks its pages in order, a Zipf phase favours its first pages as 1/rank^s says; and the examples run.
using PageLab.Core.GuestOs;
using PageLab.Lab.Workloads;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class PhasesWorkloadTests
{
    private static Scenario Phased(string phases, bool loop = false, int ticks = 30) => Scenario.Parse(
        $$"""{ "hostPages": 2200, "ticks": {{ticks}}, "samplePeriodTicks": 5, "vms": [ { "name": "p", "pages": 2048, "workload": { "kind": "phases", "loop": {{(loop ? "true" : "false")}}, "phases": [ {{phases}} ] } } ] }""",
        "phases.json");

    private static GuestProcess ProcessOf(ScenarioRunner r) => r.Scheduler.Vms[0].Os.Processes.Single(p => p.Name == "phases");

    private static bool Used(GuestProcess p, ulong v) => p.IsResident(v) || p.IsSwapped(v);

    [Fact]
    public void Each_phase_touches_only_its_region_and_the_phases_follow_at_their_ticks()
    {
        Scenario s = Phased("""
            { "pattern": "uniform", "pages": 100, "touchesPerTick": 200, "ticks": 5 },
            { "pattern": "scan", "firstPage": 1000, "pages": 50, "touchesPerTick": 10, "ticks": 3 }
            """, ticks: 6);
        using var runner = new ScenarioRunner(s);
        runner.Boot();
        for (int t = 1; t <= 5; t++) runner.Advance();
        GuestProcess p = ProcessOf(runner);
        Assert.True(Enumerable.Range(0, 100).Count(v => Used(p, (ulong)v)) > 90, "1,000 uniform touches over 100 pages used most of them");
        Assert.DoesNotContain(Enumerable.Range(100, 1948), v => Used(p, (ulong)v));
        Assert.Equal(100UL, runner.Snapshot()[0].WorkingSetPages);

        runner.Advance();                                            // tick 6: the scan's first tick, pages 1000..1009
        for (ulong v = 1000; v < 1010; v++) Assert.True(Used(p, v), $"page {v} scanned in tick 6");
        Assert.DoesNotContain(Enumerable.Range(1010, 1038), v => Used(p, (ulong)v));
        Assert.Equal(50UL, runner.Snapshot()[0].WorkingSetPages);
    }

    [Fact]
    public void A_program_ends_after_its_last_phase_unless_it_loops()
    {
        var settings = new PhasesSettings { Phases = [new PhaseSpec { Pages = 10, Ticks = 3 }, new PhaseSpec { Pages = 20, Ticks = 2 }] };
        using var arena = PageLab.Core.Host.HostArena.Create(600, "pagelab-test-phases");
        using var vm = PageLab.Core.Guest.GuestVm.Create(arena, "p", 512, 16);
        using var os = new GuestOperatingSystem(vm);
        GuestProcess proc = os.Spawn("phases", 512);
        var once = new PhasesWorkload(proc, settings);
        var loop = new PhasesWorkload(proc, settings with { Loop = true });
        Assert.Equal([0, 0, 0, 1, 1, -1, -1], Enumerable.Range(1, 7).Select(once.PhaseAt));
        Assert.Equal([0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0], Enumerable.Range(1, 11).Select(loop.PhaseAt));
        Assert.Equal(0UL, once.WorkingSetPages(6));
        Assert.Equal(10UL, loop.WorkingSetPages(6));
    }

    [Fact]
    public void A_zipf_phase_draws_rank_r_about_one_over_r_to_the_s_as_often_as_rank_1()
    {
        foreach (double s in new[] { 0.8, 1.0, 1.5 })
        {
            var z = new ZipfSampler(1000, s);
            var rng = new Random(42);
            var counts = new int[1001];
            const int draws = 400_000;
            for (int i = 0; i < draws; i++) counts[z.Sample(rng)]++;
            Assert.Equal(0, counts[0]);
            double norm = Enumerable.Range(1, 1000).Sum(r => Math.Pow(r, -s));
            foreach (int r in new[] { 1, 2, 10 })
            {
                double expected = draws * Math.Pow(r, -s) / norm;
                Assert.InRange(counts[r], expected * 0.93, expected * 1.07);
            }
        }
    }

    [Theory]
    [InlineData("""{ "pattern": "zigzag", "pages": 10, "ticks": 1 }""", "phases[0].pattern: 'zigzag' is not uniform, zipf or scan")]
    [InlineData("""{ "pages": 0, "ticks": 1 }""", "phases[0].pages: must be between 1 and the VM's pages - firstPage (2048), got 0")]
    [InlineData("""{ "pages": 100, "firstPage": 2000, "ticks": 1 }""", "phases[0].pages: must be between 1 and the VM's pages - firstPage (48), got 100")]
    [InlineData("""{ "pages": 10, "ticks": 0 }""", "phases[0].ticks: must be at least 1, got 0")]
    [InlineData("""{ "pages": 10, "ticks": 1, "writeFraction": 1.5 }""", "phases[0].writeFraction: must be in [0, 1], got 1.5")]
    [InlineData("""{ "pages": 10, "ticks": 1, "zipfExponent": 2 }""", "phases[0].zipfExponent: only a zipf phase has zipfExponent, not 'uniform' (got 2)")]
    [InlineData("""{ "pages": 10, "ticks": 1, "hot": 2 }""", "phases[0].hot: unknown key 'hot' (known here: pattern, pages, firstPage, touchesPerTick, ticks, writeFraction, zipfExponent)")]
    public void A_bad_phase_is_refused_naming_the_phase_key_and_value(string phase, string expected)
    {
        var e = Assert.Throws<ScenarioException>(() => Phased(phase));
        Assert.Equal($"phases.json: vms[0].workload.{expected}", e.Message);
    }

    [Fact]
    public void A_phases_workload_without_phases_is_refused()
    {
        var e = Assert.Throws<ScenarioException>(() => Scenario.Parse(
            """{ "hostPages": 2200, "vms": [ { "name": "p", "pages": 2048, "workload": { "kind": "phases" } } ] }""", "p.json"));
        Assert.Equal("p.json: vms[0].workload.phases: required, but missing (a list of phases: pattern, pages, touchesPerTick, ticks)", e.Message);
    }

    [Theory]
    [InlineData("phases.json")]
    [InlineData("trace.json")]
    public void The_example_scenario_runs_a_short_while_with_a_trace_and_summary(string name)
    {
        string file = TraceWorkloadTests.Examples(name);
        if (!File.Exists(file)) Assert.Skip($"the repository's examples/ is not beside the tests ({file})");
        using var dir = new TempDir();
        string trace = Path.Combine(dir.Path, "t.jsonl"), json = Path.Combine(dir.Path, "s.json");

        CliResult r = CliHarness.InProcess("run", file, "--ticks", "25", "--no-plot", "--trace", trace, "--json", json);

        Assert.True(r.Exit == 0, r.Err);
        Assert.Contains("\"accountingOk\":true", File.ReadAllText(json));
        Assert.Contains("\"kind\":\"end\"", File.ReadAllLines(trace)[^1]);
    }
}
