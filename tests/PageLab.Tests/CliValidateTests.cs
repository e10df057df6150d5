// `pagelab validate FILE`: the scenario checks of `run` without running anything: an "ok" line and exit 0,
// or the mistake and exit 2.
namespace PageLab.Tests;

public class CliValidateTests
{
    [Theory]
    [InlineData("two-vms.json", "ok: {0}: scenario 'two-vms', 2 VMs, host 2048 pages, 150 ticks, 0 injections, seed 1")]
    [InlineData("bounded-vms.json", "ok: {0}: scenario 'bounded-vms', 3 VMs, host 4096 pages, 200 ticks, 0 injections, seed 42")]
    public void Each_example_scenario_validates_with_one_ok_line(string name, string expected)
    {
        string file = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "examples", name));
        // The Windows lane runs a published test exe with no source tree beside it.
        if (!File.Exists(file) && OperatingSystem.IsWindows()) Assert.Skip($"the repository's examples/ is not beside the published tests ({file})");
        Assert.True(File.Exists(file), $"no example at {file}");

        CliResult r = CliHarness.InProcess("validate", file);

        Assert.Equal(0, r.Exit);
        Assert.Equal(string.Format(expected, file), r.Out.Trim());
        Assert.Empty(r.Err);
    }

    [Fact]
    public void The_built_in_scenario_printed_by_run_validates()
    {
        using var dir = new TempDir();
        string file = Path.Combine(dir.Path, "default.json");
        File.WriteAllText(file, CliHarness.InProcess("run", "--print-default").Out);

        CliResult r = CliHarness.InProcess("validate", file);

        Assert.Equal(0, r.Exit);
        Assert.StartsWith($"ok: {file}: scenario 'default', 3 VMs, host 6144 pages, 300 ticks, 3 injections", r.Out);
    }

    [Fact]
    public void A_bad_scenario_fails_validation_with_the_key_and_exit_2()
    {
        using var dir = new TempDir();
        string file = Path.Combine(dir.Path, "bad.json");
        File.WriteAllText(file, """{ "hostPages": 1000, "vms": [ { "name": "a", "pages": 512, "minPages": 300, "maxPages": 200, "workload": { "pages": 10 } } ] }""");

        CliResult r = CliHarness.InProcess("validate", file);

        Assert.Equal(2, r.Exit);
        Assert.Equal($"pagelab: error: {file}: vms[0].minPages: min 300 > max 200", Assert.Single(r.ErrLines));
        Assert.DoesNotContain("ok", r.Out);
    }

    [Fact]
    public void Validate_without_a_file_says_it_needs_one()
    {
        CliResult r = CliHarness.InProcess("validate");

        Assert.Equal(2, r.Exit);
        Assert.Equal(["pagelab: error: pagelab validate needs its <scenario> argument", "pagelab: see 'pagelab validate --help'"], r.ErrLines);
    }

    [Fact]
    public void Validate_of_a_directory_is_refused()
    {
        using var dir = new TempDir();
        CliResult r = CliHarness.InProcess("validate", dir.Path);
        Assert.Equal(2, r.Exit);
        Assert.Contains("is a directory", r.Err);
    }
}
