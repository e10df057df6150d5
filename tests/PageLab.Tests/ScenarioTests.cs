// Scenario files: each class of mistake is refused with the file, key and value named, before anything runs.
using PageLab.Core.Scenarios;

namespace PageLab.Tests;

public class ScenarioTests
{
    [Theory]
    [InlineData("""{ "hostPages": 100, "vms": [ { "name": "a", "pages": 512, "workload": { "pages": 10 } } ], "colour": 1 }""", "colour")]
    [InlineData("""{ "hostPages": 100, "vms": [ { "name": "a", "pages": 12, "workload": { "pages": 10 } } ] }""", "vms[0].pages: must be between 256")]
    [InlineData("""{ "hostPages": 1000, "vms": [ { "name": "a", "pages": 512, "minPages": 300, "maxPages": 200, "workload": { "pages": 10 } } ] }""", "vms[0].minPages: min 300 > max 200")]
    [InlineData("""{ "hostPages": 100, "vms": [ { "name": "a", "pages": 512, "minPages": 90, "workload": { "pages": 10 } }, { "name": "b", "pages": 512, "minPages": 90, "workload": { "pages": 10 } } ] }""", "minimums total 180 pages, more than hostPages 100")]
    [InlineData("""{ "hostPages": 100, "vms": [ { "name": "a", "pages": 512, "workload": { "kind": "bursty", "pages": 10 } } ] }""", "'bursty' is not idle, active, growing or burst")]
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
