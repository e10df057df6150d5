// Inputs that are not scenarios or sweeps as such: empty files, devices that never end, grids with a value
// given twice, run summaries of another format. Each is refused (or redone) in plain words.
using System.Text.Json.Nodes;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class CliInputLimitsTests
{
    [Fact]
    public void An_empty_scenario_file_is_said_to_be_empty()
    {
        using var dir = new TempDir();
        string file = Path.Combine(dir.Path, "empty.json");
        File.WriteAllText(file, "\n");
        CliResult r = CliHarness.InProcess("validate", file);
        Assert.Equal(2, r.Exit);
        Assert.Contains($"scenario file {file}: the file is empty", r.Err);
        foreach (string leak in CliHarness.DotNetLeaks) Assert.DoesNotContain(leak, r.Err);
    }

    [Fact]
    public void An_empty_sweep_file_is_said_to_be_empty()
    {
        using var dir = new TempDir();
        string file = Path.Combine(dir.Path, "empty.json");
        File.WriteAllText(file, "");
        CliResult r = CliHarness.InProcess("sweep", file, "--out", Path.Combine(dir.Path, "out"));
        Assert.Equal(2, r.Exit);
        Assert.Contains($"sweep file {file}: the file is empty", r.Err);
    }

    [Theory]
    [InlineData("/dev/zero")]
    [InlineData("/dev/urandom")]
    public void A_device_that_never_ends_is_refused_after_the_size_limit(string device)
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("/dev is Linux");
        CliResult r = CliHarness.InProcess("validate", device);
        Assert.Equal(2, r.Exit);
        Assert.Contains($"scenario file {device}: is larger than a scenario's limit of 64.0 MiB", r.Err);
    }

    [Theory]
    [InlineData("[0, 0]", "0")]
    [InlineData("[0, 0.0]", "0.0")]
    public void A_grid_value_given_twice_is_refused_naming_the_key_and_value(string values, string twice)
    {
        using var dir = new TempDir();
        string s = Path.Combine(dir.Path, "s.json"), sweep = Path.Combine(dir.Path, "sweep.json");
        File.WriteAllText(s, RunOutputTests.Short(ticks: 3).ToJson());
        File.WriteAllText(sweep, $$"""{ "scenario": "s.json", "grid": { "idleTax": {{values}} } }""");
        CliResult r = CliHarness.InProcess("sweep", sweep, "--out", Path.Combine(dir.Path, "out"));
        Assert.Equal(2, r.Exit);
        Assert.Contains($"grid.idleTax: the value {twice} is given twice", r.Err);
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "out")));
    }

    [Fact]
    public void A_run_summary_of_an_unknown_format_is_not_taken_as_done()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("the sweep's runs start pagelab as child processes (Linux lane)");
        using var dir = new TempDir();
        string s = Path.Combine(dir.Path, "s.json"), sweep = Path.Combine(dir.Path, "sweep.json"), outDir = Path.Combine(dir.Path, "out");
        File.WriteAllText(s, RunOutputTests.Short(ticks: 3).ToJson());
        File.WriteAllText(sweep, """{ "scenario": "s.json", "grid": { "idleTax": [0] } }""");
        CliResult first = CliHarness.Run(new Dictionary<string, string>(), dir.Path, 120, "sweep", sweep, "--out", outDir, "-j", "1", "--no-plot");
        Assert.True(first.Exit == 0, $"exit {first.Exit}; stderr: {first.Err}");
        string summary = Directory.GetFiles(Path.Combine(outDir, "runs"), "*.json").Single();
        JsonObject json = JsonNode.Parse(File.ReadAllText(summary))!.AsObject();
        json["format"] = 99;
        File.WriteAllText(summary, json.ToJsonString());

        CliResult merge = CliHarness.InProcess("sweep", sweep, "--out", outDir, "--merge", "--no-plot");

        Assert.Equal(1, merge.Exit);
        Assert.Contains("1 of 1 runs have no finished summary", merge.Err);
    }

    [Fact]
    public void Two_vms_whose_names_give_one_column_name_are_refused_naming_both()
    {
        using var dir = new TempDir();
        string s = Path.Combine(dir.Path, "s.json"), sweep = Path.Combine(dir.Path, "sweep.json");
        PageLab.Lab.Scenarios.Scenario short_ = RunOutputTests.Short(ticks: 3);
        short_ = short_ with { Vms = [short_.Vms[0] with { Name = "p.q" }, short_.Vms[1] with { Name = "p_q" }] };
        File.WriteAllText(s, short_.ToJson());
        File.WriteAllText(sweep, """{ "scenario": "s.json", "grid": { "idleTax": [0] } }""");

        CliResult r = CliHarness.InProcess("sweep", sweep, "--out", Path.Combine(dir.Path, "out"));

        Assert.True(r.Exit == 2, $"exit {r.Exit}; stderr: {r.Err}");
        Assert.Contains("the VMs 'p.q' and 'p_q' would share the table's columns vm_p_q_*", r.Err);
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "out")));
    }
}

/// <summary>A user's policy whose Name getter throws (a broken user class for the CLI's checks).</summary>
public sealed class ThrowingNamePolicy : PageLab.Core.Scheduling.IAllocationPolicy
{
    public string Name => throw new InvalidOperationException("boom-name");
    public ulong[] Allocate(PageLab.Core.Scheduling.AllocationRequest request) => throw new InvalidOperationException("never called");
}

public class CliPolicyCheckTests
{
    [Fact]
    public void Compare_checks_every_policy_before_the_first_run_writes_anything()
    {
        using var dir = new TempDir();
        string s = Path.Combine(dir.Path, "s.json"), json = Path.Combine(dir.Path, "o.json");
        File.WriteAllText(s, RunOutputTests.Short(ticks: 3).ToJson());

        CliResult r = CliHarness.InProcess("run", s, "--no-plot", "--json", json, "--compare", "static,System.Object, System.Private.CoreLib");

        Assert.Equal(2, r.Exit);
        Assert.Contains("--compare: policy 'System.Object, System.Private.CoreLib': System.Object does not implement IAllocationPolicy", r.Err);
        Assert.Empty(Directory.GetFiles(dir.Path, "o*"));
        Assert.DoesNotContain("run 1/2", r.Out);
    }

    [Fact]
    public void A_policy_whose_name_getter_throws_is_named_with_what_failed()
    {
        using var dir = new TempDir();
        string s = Path.Combine(dir.Path, "s.json");
        File.WriteAllText(s, RunOutputTests.Short(ticks: 3).ToJson());

        CliResult r = CliHarness.InProcess("run", s, "--no-plot", "--policy", "PageLab.Tests.ThrowingNamePolicy, PageLab.Tests");

        Assert.Equal(2, r.Exit);
        Assert.Contains("--policy: policy 'PageLab.Tests.ThrowingNamePolicy, PageLab.Tests': its Name property failed (InvalidOperationException: boom-name)", r.Err);
    }
}
