// Output options never destroy an input: an output that is the scenario or sweep file (by its path, a hard
// link or a symlink) is refused naming the option, and two outputs that are one file are named as such.
using PageLab.Lab.Scenarios;
namespace PageLab.Tests;

public class CliOutputSafetyTests
{
    private static string Scenario(TempDir dir)
    {
        string file = Path.Combine(dir.Path, "s.json");
        File.WriteAllText(file, RunOutputTests.Short(ticks: 3).ToJson());
        return file;
    }

    private static void AssertRefusedAndIntact(CliResult r, string file, string text, params string[] expected)
    {
        Assert.True(r.Exit == 2, $"exit {r.Exit}; stderr: {r.Err}");
        string line = Assert.Single(r.ErrLines);
        foreach (string e in expected) Assert.Contains(e, line);
        Assert.Equal(text, File.ReadAllText(file));
    }

    [Theory]
    [InlineData("--json")]
    [InlineData("--csv")]
    [InlineData("--trace")]
    [InlineData("--plot")]
    public void An_output_that_is_the_scenario_file_is_refused_and_the_scenario_kept(string option)
    {
        using var dir = new TempDir();
        string s = Scenario(dir);
        string text = File.ReadAllText(s);
        string[] noPlot = option == "--plot" ? [] : ["--no-plot"];
        CliResult r = CliHarness.InProcess(["run", s, "--ticks", "3", .. noPlot, option, s]);
        AssertRefusedAndIntact(r, s, text, $"{option} {s}: is the scenario file", $"give {option} another file");
    }

    [Fact]
    public void An_output_that_is_a_hard_link_or_symlink_to_the_scenario_is_refused()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("links are compared by device and inode (Linux)");
        using var dir = new TempDir();
        string s = Scenario(dir);
        string text = File.ReadAllText(s);
        string hard = Path.Combine(dir.Path, "hard.json"), soft = Path.Combine(dir.Path, "soft.json");
        Assert.Equal(0, Mono.Unix.Native.Syscall.link(s, hard));
        File.CreateSymbolicLink(soft, s);

        AssertRefusedAndIntact(CliHarness.InProcess("run", s, "--ticks", "3", "--no-plot", "--json", hard), s, text, $"--json {hard}: is the scenario file");
        AssertRefusedAndIntact(CliHarness.InProcess("run", s, "--ticks", "3", "--no-plot", "--csv", soft), s, text, $"--csv {soft}: is the scenario file");
    }

    [Fact]
    public void Two_outputs_that_are_links_to_one_file_are_named_as_one_file_not_another_process()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("links are compared by device and inode (Linux)");
        using var dir = new TempDir();
        string s = Scenario(dir);
        string json = Path.Combine(dir.Path, "out.json"), link = Path.Combine(dir.Path, "link.csv");
        File.WriteAllText(json, "old");
        File.CreateSymbolicLink(link, json);

        CliResult r = CliHarness.InProcess("run", s, "--ticks", "3", "--no-plot", "--json", json, "--csv", link);

        Assert.Equal(2, r.Exit);
        string line = Assert.Single(r.ErrLines);
        Assert.Contains($"--json {json} and --csv {link} name one file", line);
        Assert.DoesNotContain("another PageLab process", line);
        Assert.Equal("old", File.ReadAllText(json));
    }

    [Fact]
    public void A_sweep_whose_outputs_include_its_own_sweep_file_is_refused()
    {
        using var dir = new TempDir();
        string s = Scenario(dir);
        // The sweep file is where --out would put the table's CSV.
        string sweep = Path.Combine(dir.Path, "sweep.csv");
        string text = $$"""{ "scenario": {{System.Text.Json.JsonSerializer.Serialize(s)}}, "grid": { "idleTax": [0] } }""";
        File.WriteAllText(sweep, text);

        CliResult r = CliHarness.InProcess("sweep", sweep, "--out", dir.Path);

        AssertRefusedAndIntact(r, sweep, text, $"--out {sweep}: is the sweep file");
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "runs")), "a refused sweep made its runs directory");
    }

    [Fact]
    public void Merge_creates_no_runs_directory()
    {
        using var dir = new TempDir();
        string s = Scenario(dir);
        string sweep = Path.Combine(dir.Path, "sweep.json");
        File.WriteAllText(sweep, $$"""{ "scenario": {{System.Text.Json.JsonSerializer.Serialize(s)}}, "grid": { "idleTax": [0] } }""");
        string outDir = Path.Combine(dir.Path, "out");

        CliResult r = CliHarness.InProcess("sweep", sweep, "--out", outDir, "--merge");

        Assert.Equal(1, r.Exit);
        Assert.False(Directory.Exists(Path.Combine(outDir, "runs")), "--merge made the runs directory");
    }
}
