// Bad scenario files, one test per class of mistake: each is refused with the file, the key and the value
// named in one clear message, and `pagelab run` stops before running anything or writing any output.
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class ScenarioFileTests
{
    private const string Vm = """{ "name": "a", "pages": 512, "workload": { "pages": 10 } }""";

    [Fact]
    public void Malformed_json_is_refused_with_its_line()
    {
        (string file, ScenarioException e) = Refused("{\n  \"hostPages\": 100,\n  \"vms\": [ \n}");
        Assert.Equal("$", e.Key);
        Assert.StartsWith($"{file}: $: ", e.Message);
        Assert.Contains("line 4, column 1: ", e.Message);
    }

    [Fact]
    public void An_unknown_key_is_refused_with_the_keys_known_at_that_place()
    {
        (string file, ScenarioException e) = Refused($$"""{ "hostPages": 100, "vms": [ { "name": "a", "pages": 512, "workload": { "pages": 10, "burst": 3 } } ] }""");
        Assert.Equal($"{file}: vms[0].workload.burst: unknown key 'burst' (known here: kind, pages, endPages, freeAtTick, touchesPerTick)", e.Message);
    }

    [Fact]
    public void A_value_of_the_wrong_type_is_refused_naming_the_value()
    {
        (string file, ScenarioException e) = Refused($$"""{ "hostPages": "2GiB", "vms": [ {{Vm}} ] }""");
        Assert.Equal($"{file}: hostPages: \"2GiB\" is not a whole number from 0 to 18446744073709551615", e.Message);
    }

    [Fact]
    public void A_negative_size_is_refused_naming_the_value()
    {
        (string file, ScenarioException e) = Refused($$"""{ "hostPages": 100, "vms": [ { "name": "a", "pages": -512, "workload": { "pages": 10 } } ] }""");
        Assert.Equal($"{file}: vms[0].pages: -512 is not a whole number from 0 to 18446744073709551615", e.Message);
    }

    [Fact]
    public void A_vm_size_outside_the_supported_range_is_refused()
    {
        (string file, ScenarioException e) = Refused($$"""{ "hostPages": 100, "vms": [ { "name": "a", "pages": 12, "workload": { "pages": 10 } } ] }""");
        Assert.Equal($"{file}: vms[0].pages: must be between 256 and 16777216, got 12", e.Message);
    }

    [Fact]
    public void Host_memory_beyond_the_arena_limit_is_refused_before_any_arena_is_created()
    {
        (string file, ScenarioException e) = Refused($$"""{ "hostPages": 5000000000, "vms": [ {{Vm}} ] }""");
        Assert.Equal($"{file}: hostPages: must be between 1 and 16777216 (64 GiB of 4 KiB pages), got 5000000000", e.Message);
    }

    [Fact]
    public void Guest_physical_memory_totalling_beyond_the_limit_is_refused()
    {
        string big = string.Join(", ", Enumerable.Range(0, 3).Select(i => $$"""{ "name": "v{{i}}", "pages": 16000000, "workload": { "pages": 10 } }"""));
        (string file, ScenarioException e) = Refused($$"""{ "hostPages": 3000, "vms": [ {{big}} ] }""");
        Assert.Equal($"{file}: vms[*].pages: the VMs' guest physical memory totals 48000000 pages, more than the limit of 33554432 (128 GiB of 4 KiB pages)", e.Message);
    }

    [Fact]
    public void A_minimum_above_the_maximum_is_refused()
    {
        (string file, ScenarioException e) = Refused($$"""{ "hostPages": 1000, "vms": [ { "name": "a", "pages": 512, "minPages": 300, "maxPages": 200, "workload": { "pages": 10 } } ] }""");
        Assert.Equal($"{file}: vms[0].minPages: min 300 > max 200", e.Message);
    }

    [Fact]
    public void A_maximum_above_the_vms_own_size_is_refused()
    {
        (string file, ScenarioException e) = Refused($$"""{ "hostPages": 1000, "vms": [ { "name": "a", "pages": 512, "maxPages": 600, "workload": { "pages": 10 } } ] }""");
        Assert.Equal($"{file}: vms[0].maxPages: 600 is more than the VM's 512 pages", e.Message);
    }

    [Fact]
    public void Initial_allocations_beyond_the_host_are_refused()
    {
        (string file, ScenarioException e) = Refused($$"""
            { "hostPages": 500, "vms": [ { "name": "a", "pages": 512, "initialPages": 300, "workload": { "pages": 10 } },
                                         { "name": "b", "pages": 512, "initialPages": 300, "workload": { "pages": 10 } } ] }
            """);
        Assert.Equal($"{file}: vms[*].initialPages: initial allocations total 600 pages, more than hostPages 500", e.Message);
    }

    [Fact]
    public void A_workload_larger_than_its_vm_is_refused()
    {
        (string file, ScenarioException e) = Refused($$"""{ "hostPages": 1000, "vms": [ { "name": "a", "pages": 512, "workload": { "pages": 512 } } ] }""");
        Assert.Equal($"{file}: vms[0].workload.pages: must be between 1 and the VM's pages - 1, got 512", e.Message);
    }

    [Fact]
    public void A_growing_workload_without_an_end_is_refused()
    {
        (string file, ScenarioException e) = Refused($$"""{ "hostPages": 1000, "vms": [ { "name": "a", "pages": 512, "workload": { "kind": "growing", "pages": 10 } } ] }""");
        Assert.Equal($"{file}: vms[0].workload.endPages: a growing workload needs endPages between 1 and 511", e.Message);
    }

    [Fact]
    public void A_scenario_without_vms_is_refused()
    {
        (string file, ScenarioException e) = Refused("""{ "hostPages": 1000, "vms": [] }""");
        Assert.Equal($"{file}: vms: needs at least one VM", e.Message);
    }

    [Fact]
    public void A_file_holding_no_scenario_is_refused()
    {
        (string file, ScenarioException e) = Refused("[ 1, 2 ]");
        Assert.Equal($"{file}: $: [ 1, 2 ] is not an object", e.Message);
    }

    [Fact]
    public void Pagelab_run_with_a_bad_file_fails_on_one_line_and_writes_no_plot_or_trace()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows()) Assert.Skip("the runner needs the fault engine (Linux and Windows)");
        using var dir = new TempDir();
        string file = Path.Combine(dir.Path, "bad.json"), plot = Path.Combine(dir.Path, "out.png"), trace = Path.Combine(dir.Path, "out.jsonl");
        File.WriteAllText(file, $$"""{ "hostPages": 100, "vms": [ { "name": "a", "pages": 512, "minPages": 300, "maxPages": 200, "workload": { "pages": 10 } } ] }""");
        var stderr = new StringWriter();
        var stdout = new StringWriter();
        TextWriter oldErr = Console.Error, oldOut = Console.Out;
        int exit;
        try
        {
            Console.SetError(stderr);
            Console.SetOut(stdout);
            exit = PageLab.Cli.Program.Main(["run", file, "--plot", plot, "--trace", trace]);
        }
        finally
        {
            Console.SetError(oldErr);
            Console.SetOut(oldOut);
        }

        Assert.Equal(2, exit);
        Assert.Equal($"pagelab: error: {file}: vms[0].minPages: min 300 > max 200", stderr.ToString().Trim());
        Assert.False(File.Exists(plot), "a plot was written for a refused scenario");
        Assert.False(File.Exists(trace), "a trace was written for a refused scenario");
        Assert.DoesNotContain("tick", stdout.ToString());
    }

    private static (string File, ScenarioException Error) Refused(string json)
    {
        string path = Path.Combine(Path.GetTempPath(), $"pagelab-scenario-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, json);
        try
        {
            var e = Assert.Throws<ScenarioException>(() => Scenario.Load(path));
            Assert.Equal(path, e.Origin);
            return (path, e);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
