// The workload seam: a kind registered in a test (its class and one Register call, nothing else) is checked
// by its own keys, built by the runner and run on real guest memory; every registered kind is in the docs.
using System.Text.Json.Nodes;
using PageLab.Core.GuestOs;
using PageLab.Lab.Workloads;
using PageLab.Lab.Scenarios;
using PageLab.Lab.Observation;

namespace PageLab.Tests;

public class WorkloadKindTests
{
    /// <summary>A kind that exists only in this test: writes the first <c>pages</c> pages, <c>stride</c> apart.</summary>
    private sealed record StrideSettings
    {
        public ulong Pages { get; init; }
        public int Stride { get; init; } = 1;
    }

    private sealed class StrideKind : WorkloadKind<StrideSettings>
    {
        public override string Name => "stride-test";
        public override IReadOnlyList<(string Key, string Accepts)> Required => [("pages", "1 to the VM's pages")];

        protected override void Validate(StrideSettings s, WorkloadContext c)
        {
            if (s.Stride < 1) Fail("stride", $"must be at least 1, got {s.Stride}");
            if (s.Pages == 0 || s.Pages > c.VmPages) Fail("pages", $"must be between 1 and {c.VmPages}, got {s.Pages}");
        }

        protected override IWorkload Create(StrideSettings s, GuestProcess p, WorkloadContext c) => new StrideWorkload(p, s);
    }

    private sealed class StrideWorkload(GuestProcess p, StrideSettings s) : IWorkload
    {
        public GuestProcess Process => p;
        public ulong WorkingSetPages(int tick) => (s.Pages + (ulong)s.Stride - 1) / (ulong)s.Stride;
        public void Step(int tick, Random rng)
        {
            for (ulong v = 0; v < s.Pages; v += (ulong)s.Stride) p.Page(v)[0] = (byte)tick;
        }
    }

    private static readonly Lazy<bool> Registered = new(() =>
    {
        WorkloadKinds.Register(new StrideKind());
        return true;
    });

    private static string Json(string workload) =>
        $$"""{ "hostPages": 1200, "ticks": 3, "vms": [ { "name": "a", "pages": 1024, "workload": {{workload}} } ] }""";

    [Fact]
    public void A_kind_registered_in_a_test_is_checked_built_and_run_with_no_other_change()
    {
        _ = Registered.Value;
        Scenario s = Scenario.Parse(Json("""{ "kind": "stride-test", "pages": 100, "stride": 10 }"""), "stride.json");

        using var runner = new ScenarioRunner(s);
        foreach (TickSnapshot _ in runner.Run()) { }

        GuestProcess p = runner.Scheduler.Vms[0].Os.Processes.Single(x => x.Name == "stride-test");
        for (ulong v = 0; v < 100; v++) Assert.Equal(v % 10 == 0, p.IsResident(v) || p.IsSwapped(v));
        Assert.Equal((byte)3, p.Page(0)[0]);                            // the last tick's write, in guest memory
        Assert.Equal(10UL, runner.Snapshot()[0].WorkingSetPages);
    }

    [Theory]
    [InlineData("""{ "kind": "stride-test", "pages": 100, "stride": 0 }""", "stride.json: vms[0].workload.stride: must be at least 1, got 0")]
    [InlineData("""{ "kind": "stride-test", "pages": 100, "touchesPerTick": 5 }""", "stride.json: vms[0].workload.touchesPerTick: unknown key 'touchesPerTick' (known here: kind, pages, stride)")]
    [InlineData("""{ "kind": "stride-test", "stride": 2 }""", "stride.json: vms[0].workload.pages: required, but missing (1 to the VM's pages)")]
    [InlineData("""{ "kind": "stride-test", "pages": 100, "stride": "2" }""", "stride.json: vms[0].workload.stride: \"2\" is not a whole number")]
    public void A_registered_kind_s_keys_are_checked_by_its_own_rules(string workload, string expected)
    {
        _ = Registered.Value;
        var e = Assert.Throws<ScenarioException>(() => Scenario.Parse(Json(workload), "stride.json"));
        Assert.StartsWith(expected, e.Message);
    }

    [Fact]
    public void A_kind_name_is_registered_once()
    {
        _ = Registered.Value;
        var e = Assert.Throws<ArgumentException>(() => WorkloadKinds.Register(new StrideKind()));
        Assert.Contains("'stride-test' is already registered", e.Message);
    }

    [Fact]
    public void An_unknown_kind_is_refused_naming_the_registered_ones()
    {
        var e = Assert.Throws<ScenarioException>(() => Scenario.Parse(Json("""{ "kind": "bursty", "pages": 10 }"""), "k.json"));
        Assert.StartsWith("k.json: vms[0].workload.kind: 'bursty' is not a workload kind (idle, active, growing, burst", e.Message);
    }

    [Fact]
    public void A_workload_written_by_the_scenario_reads_back_equal_with_its_defaults_filled_in()
    {
        var w = new WorkloadSpec { Kind = "growing", Pages = 10, EndPages = 20 };
        Scenario s = Scenario.Parse(Json("""{ "kind": "growing", "pages": 10, "endPages": 20 }"""), "g.json");
        Assert.Equal(w, s.Vms[0].Workload);
        Assert.Contains("\"touchesPerTick\": 400", s.ToJson());
        WorkloadSpec copy = w with { Pages = 11 };             // a copy owns its keys
        Assert.Equal(10UL, (ulong)w.Keys["pages"]!);
        Assert.Equal(11UL, (ulong)copy.Keys["pages"]!);
        Assert.Equal(JsonValue.Create(5), w.With("touchesPerTick", 5).Keys["touchesPerTick"], JsonNode.DeepEquals);
    }

    [Fact]
    public void Every_built_in_kind_is_listed_in_the_scenario_schema()
    {
        string doc = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "docs", "scenario-schema.md"));
        if (!File.Exists(doc)) Assert.Skip($"the repository's docs/ is not beside the tests ({doc})");
        string[] lines = File.ReadAllLines(doc);
        string kindRow = lines.Single(l => l.StartsWith("| `kind` | string | `\"active\"`", StringComparison.Ordinal));
        foreach (IWorkloadKind k in WorkloadKinds.All.Where(k => k.GetType().Assembly == typeof(WorkloadKinds).Assembly))
        {
            Assert.Contains($"`{k.Name}`", kindRow);
            Assert.Contains(lines, l => l.StartsWith("### ", StringComparison.Ordinal) && l.Contains($"`{k.Name}`", StringComparison.Ordinal));
        }
    }
}
