// Scenario files: each class of mistake is refused with the file, key and value named, before anything runs.
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class ScenarioTests
{
    [Theory]
    [InlineData("""{ "hostPages": 100, "vms": [ { "name": "a", "pages": 512, "workload": { "pages": 10 } } ], "colour": 1 }""", "colour")]
    [InlineData("""{ "hostPages": 100, "vms": [ { "name": "a", "pages": 12, "workload": { "pages": 10 } } ] }""", "vms[0].pages: must be between 256")]
    [InlineData("""{ "hostPages": 1000, "vms": [ { "name": "a", "pages": 512, "minPages": 300, "maxPages": 200, "workload": { "pages": 10 } } ] }""", "vms[0].minPages: min 300 > max 200")]
    [InlineData("""{ "hostPages": 400, "vms": [ { "name": "a", "pages": 512, "minPages": 250, "workload": { "pages": 10 } }, { "name": "b", "pages": 512, "minPages": 250, "workload": { "pages": 10 } } ] }""", "minimums total 500 pages, more than hostPages 400")]
    // Allocations that cannot hold a VM's pinned kernel and the guest OS's reserve (boot chased them for minutes).
    [InlineData("""{ "hostPages": 1, "vms": [ { "name": "a", "pages": 512, "workload": { "pages": 200 } } ] }""", "hostPages: 1 cannot hold the VMs' kernels (pinned) and the guest OS's 96 free pages each: at least 160")]
    [InlineData("""{ "hostPages": 1000, "vms": [ { "name": "a", "pages": 512, "maxPages": 100, "workload": { "pages": 10 } } ] }""", "vms[0].maxPages: 100 cannot hold the VM's kernel (64 pages, pinned)")]
    [InlineData("""{ "hostPages": 1000, "vms": [ { "name": "a", "pages": 512, "initialPages": 150, "workload": { "pages": 10 } } ] }""", "vms[0].initialPages: 150 cannot hold")]
    [InlineData("""{ "hostPages": 400, "vms": [ { "name": "a", "pages": 512, "workload": { "pages": 10 } }, { "name": "b", "pages": 512, "kernelPages": 128, "workload": { "pages": 10 } } ] }""", "vms[1].initialPages: 200 (hostPages / 2 VMs) cannot hold the VM's kernel (128 pages, pinned)")]
    // Values Enum.TryParse would take (numbers, lists, spaces) name no error kind.
    [InlineData("""{ "hostPages": 1000, "vms": [ { "name": "a", "pages": 512, "workload": { "pages": 10 } } ], "injections": [ { "tick": 1, "vm": "a", "kind": "7" } ] }""", "injections[0].kind: '7' is not one of")]
    [InlineData("""{ "hostPages": 1000, "vms": [ { "name": "a", "pages": 512, "workload": { "pages": 10 } } ], "injections": [ { "tick": 1, "vm": "a", "kind": "SingleBit,MultiBit" } ] }""", "injections[0].kind: 'SingleBit,MultiBit' is not one of")]
    [InlineData("""{ "hostPages": 1000, "vms": [ { "name": "a", "pages": 512, "workload": { "pages": 10, "touchesPerTick": 2147483647 } } ] }""", "vms[0].workload.touchesPerTick: must be between 0 and 16777216, got 2147483647")]
    [InlineData("""{ "hostPages": 1000, "ticks": 10, "vms": [ { "name": "a", "pages": 512, "workload": { "kind": "burst", "pages": 10, "freeAtTick": 5 } } ] }""", "vms[0].workload.endPages: a burst needs endPages")]
    [InlineData("""{ "hostPages": 1000, "ticks": 10, "vms": [ { "name": "a", "pages": 512, "workload": { "kind": "burst", "pages": 10, "endPages": 0, "freeAtTick": 5 } } ] }""", "vms[0].workload.endPages: a burst needs endPages, the pages it keeps: between 1 and 9 (fewer than its pages), got 0")]
    [InlineData("""{ "hostPages": 1000, "vms": [ { "name": "a", "pages": 512, "workload": { "kind": "idle", "pages": 10, "endPages": 5 } } ] }""", "vms[0].workload.endPages: only a growing or burst workload has endPages, not 'idle'")]
    [InlineData("""{ "hostPages": 1000, "vms": [ { "name": "a", "pages": 512, "workload": { "kind": "active", "pages": 10, "freeAtTick": 5 } } ] }""", "vms[0].workload.freeAtTick: only a burst workload has freeAtTick, not 'active'")]
    [InlineData("""{ "hostPages": 100, "vms": [ { "name": "a", "pages": 512, "workload": { "kind": "bursty", "pages": 10 } } ] }""", "vms[0].workload.kind: 'bursty' is not a workload kind (idle, active, growing, burst, trace, phases, sqlite")]
    [InlineData("""{ "hostPages": 100, "vms": [ { "name": "a", "pages": 512, "workload": { "pages": 10 } }, { "name": "a", "pages": 512, "workload": { "pages": 10 } } ] }""", "vms[1].name: 'a' is used twice")]
    [InlineData("""{ "hostPages": "lots", "vms": [] }""", "hostPages")]
    public void A_bad_scenario_file_is_refused_naming_the_file_key_and_value(string json, string expected)
    {
        string path = Path.Combine(Path.GetTempPath(), $"pagelab-scenario-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, json);
        try
        {
            var e = Assert.Throws<ScenarioException>(() => Scenario.Load(path));
            Assert.Contains(path, e.Message);
            Assert.Contains(expected, e.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void The_built_in_scenario_round_trips_through_its_json()
    {
        string path = Path.Combine(Path.GetTempPath(), $"pagelab-scenario-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, Scenario.Default.ToJson());
        try
        {
            Scenario s = Scenario.Load(path);
            Assert.Equal(Scenario.Default.Vms, s.Vms);
            Assert.Equal(Scenario.Default.HostPages, s.HostPages);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
