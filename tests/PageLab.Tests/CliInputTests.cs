// Bad input to the `pagelab` command, one test per case: each is refused before anything runs, in one or
// two plain lines naming the option or key, the value and what is accepted, with exit code 2.
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class CliInputTests
{
    /// <summary>Asserts a refusal: exit 2, one or two stderr lines, each expected text in the first, no .NET internals.</summary>
    private static CliResult Refused(string[] args, params string[] expected)
    {
        CliResult r = CliHarness.InProcess(args);
        Assert.True(r.Exit == 2, $"exit {r.Exit} for `pagelab {string.Join(' ', args)}`; stderr: {r.Err}");
        Assert.InRange(r.ErrLines.Length, 1, 2);
        Assert.StartsWith("pagelab: error: ", r.ErrLines[0]);
        foreach (string e in expected) Assert.Contains(e, r.ErrLines[0]);
        foreach (string leak in CliHarness.DotNetLeaks) Assert.DoesNotContain(leak, r.Err);
        Assert.DoesNotContain("tick", r.Out); // nothing ran
        return r;
    }

    private static string WriteFile(TempDir dir, string name, string text)
    {
        string path = Path.Combine(dir.Path, name);
        File.WriteAllText(path, text);
        return path;
    }

    [Fact]
    public void A_seed_that_is_not_a_number_names_the_option_the_value_and_the_range() =>
        Refused(["run", "--seed", "abc"], "--seed", "'abc'", "is not a whole number", "-2147483648 to 2147483647");

    [Fact]
    public void A_seed_beyond_32_bits_is_out_of_range_not_malformed() =>
        Refused(["run", "--seed", "99999999999"], "--seed", "'99999999999' is out of range");

    [Fact]
    public void An_option_without_its_value_says_what_it_accepts() =>
        Refused(["run", "--ticks"], "--ticks needs a value", "1 to 2147483647");

    [Fact]
    public void Zero_ticks_are_refused_with_the_accepted_range() =>
        Refused(["run", "--ticks", "0"], "--ticks: 0 is out of range", "1 to 2147483647");

    [Fact]
    public void An_unknown_error_kind_lists_the_kinds_without_the_enum_type() =>
        Refused(["inject", "--kind", "Foo"], "--kind: 'Foo' is not one of SingleBit, MultiBit, ByteRange, WholePage");

    [Fact]
    public void An_error_kind_given_as_a_number_is_refused() =>
        Refused(["inject", "--kind", "3"], "--kind: '3' is not one of");

    [Fact]
    public void An_unknown_injection_target_lists_the_targets() =>
        Refused(["inject", "--target", "somewhere"], "--target: 'somewhere' is not one of parity-page, disk-page");

    [Fact]
    public void A_campaign_of_zero_injections_names_the_option_and_range() =>
        Refused(["campaign", "--injections", "0"], "--injections: 0 is out of range", "1 to 1000000");

    [Fact]
    public void A_campaign_group_size_outside_2_to_32_is_refused() =>
        Refused(["campaign", "--group-size", "40"], "--group-size: 40 is out of range", "2 to 32");

    [Fact]
    public void A_demo_run_longer_than_the_vm_is_a_usage_error() =>
        Refused(["demo", "--pages", "4", "--run", "9"], "--run", "--pages (4)", "got 9");

    [Fact]
    public void An_unknown_command_lists_the_commands()
    {
        CliResult r = Refused(["bogus"], "'bogus' is not a pagelab command", "run", "validate", "campaign");
        Assert.Contains("pagelab --help", r.ErrLines[1]);
    }

    [Fact]
    public void No_command_at_all_lists_the_commands() => Refused([], "a command is required", "run");

    [Fact]
    public void An_unknown_option_of_run_is_not_taken_for_a_scenario_file()
    {
        CliResult r = Refused(["run", "--bogus"], "'--bogus' is not an option of pagelab run");
        Assert.Contains("pagelab run --help", r.ErrLines[1]);
    }

    [Fact]
    public void An_option_given_twice_is_refused() => Refused(["run", "--seed", "1", "--seed", "2"], "--seed is given more than once");

    [Fact]
    public void A_directory_as_the_scenario_file_is_refused_as_a_directory()
    {
        using var dir = new TempDir();
        Refused(["run", dir.Path], $"scenario file {dir.Path}: is a directory, not a JSON file");
    }

    [Fact]
    public void A_missing_scenario_file_is_refused()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "nope.json");
        Refused(["run", path], $"scenario file {path}: does not exist");
    }

    [Fact]
    public void Malformed_json_gives_a_one_based_line_and_column()
    {
        using var dir = new TempDir();
        string file = WriteFile(dir, "bad.json", "{\n  \"hostPages\": 100,\n  \"vms\": [ \n}");
        Refused(["run", file], $"{file}: $: line 4, column 1: '}}' is an invalid start of a value");
    }

    [Fact]
    public void The_column_of_a_json_error_counts_characters_not_utf8_bytes()
    {
        using var dir = new TempDir();
        // "ééé" is 6 bytes of UTF-8 but 3 characters; the stray 'x' is the 15th character of line 2 (the 18th byte).
        string file = WriteFile(dir, "bad.json", "{\n\"name\": \"ééé\" x }");
        Refused(["run", file], "line 2, column 15:");
    }

    [Fact]
    public void An_empty_object_says_the_first_required_key_is_required()
    {
        using var dir = new TempDir();
        string file = WriteFile(dir, "empty.json", "{}");
        Refused(["run", file], $"{file}: hostPages: required, but missing", "1 to 16777216");
    }

    [Theory]
    [InlineData("""{ "hostPages": 100 }""", "vms: required")]
    [InlineData("""{ "hostPages": 100, "vms": [ { "pages": 512, "workload": { "pages": 10 } } ] }""", "vms[0].name: required")]
    [InlineData("""{ "hostPages": 100, "vms": [ { "name": "a", "workload": { "pages": 10 } } ] }""", "vms[0].pages: required")]
    [InlineData("""{ "hostPages": 100, "vms": [ { "name": "a", "pages": 512 } ] }""", "vms[0].workload: required")]
    [InlineData("""{ "hostPages": 100, "vms": [ { "name": "a", "pages": 512, "workload": { "kind": "idle" } } ] }""", "vms[0].workload.pages: required")]
    [InlineData("""{ "hostPages": 100, "vms": [ { "name": "a", "pages": 512, "workload": { "pages": 10 } } ], "injections": [ { "tick": 3 } ] }""", "injections[0].vm: required")]
    public void Every_required_key_is_said_to_be_required(string json, string expected)
    {
        using var dir = new TempDir();
        Refused(["run", WriteFile(dir, "s.json", json)], expected);
    }

    [Fact]
    public void A_duplicate_key_is_refused_naming_the_key()
    {
        using var dir = new TempDir();
        string file = WriteFile(dir, "dup.json", """{ "hostPages": 100, "vms": [ { "name": "a", "pages": 512, "pages": 1024, "workload": { "pages": 10 } } ] }""");
        Refused(["run", file], $"{file}: vms[0].pages: the key 'pages' is given twice");
    }

    [Fact]
    public void A_duplicate_top_level_key_is_refused_even_with_equal_values()
    {
        using var dir = new TempDir();
        string file = WriteFile(dir, "dup.json", """{ "hostPages": 100, "hostPages": 100, "vms": [] }""");
        Refused(["run", file], "hostPages: the key 'hostPages' is given twice");
    }

    [Fact]
    public void Static_and_compare_together_are_refused() =>
        Refused(["run", "--static", "--compare"], "--static and --compare cannot be used together");

    [Fact]
    public void A_plot_path_with_no_plot_is_refused_by_run() =>
        Refused(["run", "--plot", "x.png", "--no-plot"], "--plot and --no-plot cannot be used together");

    [Fact]
    public void A_plot_path_with_no_plot_is_refused_by_campaign() =>
        Refused(["campaign", "--plot", "x.png", "--no-plot"], "--plot and --no-plot cannot be used together");

    [Fact]
    public void Print_default_with_a_scenario_file_is_refused_naming_the_file()
    {
        using var dir = new TempDir();
        string file = WriteFile(dir, "s.json", "{}");
        Refused(["run", file, "--print-default"], "--print-default", "takes no scenario file", file);
    }

    [Fact]
    public void Print_default_with_another_option_is_refused() =>
        Refused(["run", "--print-default", "--seed", "3"], "--print-default and --seed cannot be used together");

    [Fact]
    public void Print_default_alone_prints_a_scenario_that_loads()
    {
        CliResult r = CliHarness.InProcess("run", "--print-default");
        Assert.Equal(0, r.Exit);
        using var dir = new TempDir();
        Assert.Equal(Scenario.Default.Vms, Scenario.Load(WriteFile(dir, "d.json", r.Out)).Vms);
    }

    [Fact]
    public void A_plot_in_a_missing_directory_is_refused_before_the_run()
    {
        using var dir = new TempDir();
        string plot = Path.Combine(dir.Path, "no-such-dir", "p.png");
        Refused(["run", "--plot", plot], $"--plot {plot}: the directory {Path.Combine(dir.Path, "no-such-dir")} does not exist");
    }

    [Fact]
    public void A_directory_as_the_trace_is_refused_before_the_run()
    {
        using var dir = new TempDir();
        Refused(["run", "--no-plot", "--trace", dir.Path], $"--trace {dir.Path}: is a directory");
    }

    [Fact]
    public void A_trace_under_a_file_is_refused_before_the_run()
    {
        using var dir = new TempDir();
        string file = WriteFile(dir, "f", "");
        Refused(["run", "--no-plot", "--trace", Path.Combine(file, "t.jsonl")], $"{file} is a file, not a directory");
    }

    [Fact]
    public void A_trace_on_a_read_only_file_system_is_refused_before_the_run()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("/proc is Linux");
        Refused(["run", "--no-plot", "--trace", "/proc/pagelab-trace.jsonl"], "--trace /proc/pagelab-trace.jsonl: not writable");
    }

    [Fact]
    public void Plot_and_trace_naming_one_file_are_refused()
    {
        using var dir = new TempDir();
        string same = Path.Combine(dir.Path, "out");
        Refused(["run", "--plot", same, "--trace", same], "--plot and --trace name the same file");
    }

    [Fact]
    public void Checking_an_output_path_leaves_no_file_and_keeps_an_existing_one()
    {
        using var dir = new TempDir();
        string fresh = Path.Combine(dir.Path, "fresh.png"), existing = WriteFile(dir, "old.jsonl", "keep me");

        PageLab.Cli.OutputPaths.CheckWritable("--plot", fresh);
        PageLab.Cli.OutputPaths.CheckWritable("--trace", existing);

        Assert.False(File.Exists(fresh));
        Assert.Equal("keep me", File.ReadAllText(existing));
    }

    [Theory]
    [InlineData("--trace")]
    [InlineData("--json")]
    public void A_device_as_an_output_is_refused_naming_the_option_before_the_run(string option)
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("/dev/full is Linux");
        using var dir = new TempDir();
        string file = WriteFile(dir, "short.json", RunOutputTests.Short(ticks: 10).ToJson());

        CliResult r = CliHarness.InProcess("run", file, "--no-plot", option, "/dev/full");

        Assert.Equal(2, r.Exit);
        Assert.Contains($"pagelab: error: {option} /dev/full: is not a regular file", r.Err);
        Assert.DoesNotContain("tick", r.Out);
        foreach (string leak in CliHarness.DotNetLeaks) Assert.DoesNotContain(leak, r.Err);
    }
}
