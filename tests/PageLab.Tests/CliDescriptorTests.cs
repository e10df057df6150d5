// `pagelab` under a low open-file limit (`ulimit -n`): a scenario of many VMs is refused before it starts,
// and running out of descriptors anywhere gives one line that says to raise the limit, never an abort (134).
namespace PageLab.Tests;

public class CliDescriptorTests
{
    // 64 VMs of the smallest size: 128 swap files, more than a limit of 64 or 128 leaves.
    private static string ManyVms(TempDir dir)
    {
        string vms = string.Join(",", Enumerable.Range(0, 64).Select(i =>
            $$"""{ "name": "v{{i}}", "pages": 256, "workload": { "kind": "idle", "pages": 128, "touchesPerTick": 2 } }"""));
        string path = Path.Combine(dir.Path, "vms64.json");
        File.WriteAllText(path, $$"""{ "name": "vms64", "hostPages": 16384, "ticks": 10, "seed": 1, "vms": [{{vms}}] }""");
        return path;
    }

    private static CliResult UnderLimit(TempDir dir, int limit, params string[] args)
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("sets the open-file limit with the shell's ulimit (Linux)");
        string command = $"ulimit -n {limit} && exec dotnet exec \"$0\" \"$@\"";
        using ChildCli child = CliHarness.StartProgram("bash", dir.Path, dir.Path, ["-c", command, CliHarness.Dll, .. args]);
        int exit = child.WaitForExit(TimeSpan.FromSeconds(120));
        return new CliResult(exit, child.Out, child.Err);
    }

    [Theory]
    [InlineData(64)]
    [InlineData(30)]
    public void Running_out_of_descriptors_is_one_line_saying_to_raise_ulimit_not_an_abort(int limit)
    {
        using var dir = new TempDir();
        CliResult r = UnderLimit(dir, limit, "run", ManyVms(dir), "--ticks", "3", "--no-plot");

        Assert.True(r.Exit == 1, $"exit {r.Exit}; stderr: {r.Err}");
        string line = Assert.Single(r.ErrLines);
        Assert.StartsWith("pagelab: error: ", line);
        Assert.Contains($"`ulimit -n` is {limit}", line);
        Assert.Contains("host swap file and its guest swap file", line);
        Assert.All(CliHarness.DotNetLeaks, leak => Assert.DoesNotContain(leak, r.Err));
    }

    [Fact]
    public void A_campaign_out_of_descriptors_is_one_line_not_an_abort()
    {
        using var dir = new TempDir();
        CliResult r = UnderLimit(dir, 30, "campaign", "--injections", "100", "--no-plot");

        Assert.True(r.Exit == 1, $"exit {r.Exit}; stderr: {r.Err}");
        Assert.Contains("raise the limit", Assert.Single(r.ErrLines));
    }

    [Fact]
    public void A_scenario_whose_swap_files_do_not_fit_the_limit_is_refused_before_any_vm_starts()
    {
        using var dir = new TempDir();
        CliResult r = UnderLimit(dir, 160, "run", ManyVms(dir), "--ticks", "3", "--no-plot");

        Assert.True(r.Exit == 1, $"exit {r.Exit}; stderr: {r.Err}");
        string line = Assert.Single(r.ErrLines);
        Assert.Contains("64 VMs x 2: each keeps its host swap file and its guest swap file open", line);
        Assert.Contains("but `ulimit -n` is 160; raise it", line);
        Assert.DoesNotContain("booting", r.Out);
        Assert.Empty(Directory.GetFiles(dir.Path, "pagelab-*"));
    }

    [Fact]
    public void A_closed_stdout_is_named_in_one_line_not_access_denied()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("closes stdout with the shell's >&- (Linux)");
        using var dir = new TempDir();
        string s = Path.Combine(dir.Path, "s.json");
        File.WriteAllText(s, RunOutputTests.Short(ticks: 3).ToJson());
        using ChildCli child = CliHarness.StartProgram("bash", dir.Path, dir.Path, ["-c", "exec dotnet exec \"$0\" run \"$1\" --no-plot --json - >&-", CliHarness.Dll, s]);
        int exit = child.WaitForExit(TimeSpan.FromSeconds(60));

        Assert.Equal(1, exit);
        Assert.Equal("pagelab: error: standard output is closed or not writable (was it closed with >&-?); send it to a file or to /dev/null",
            child.Err.Trim());
    }
}
