// Lab's demo setups. `pagelab inject` (InjectDemo): a real memory error in each target of a small protected VM ends
// as its protection says, bytes checked, frame retired. `pagelab demo` (MoveDemo): the faults, the move and its checks.
using PageLab.Core.Host;
using PageLab.Core.Recovery;
using PageLab.Lab.Demos;

namespace PageLab.Tests;

public class InjectDemoTests
{
    [Theory]
    [InlineData("parity-page", ErrorOutcome.Recovered)]
    [InlineData("disk-page", ErrorOutcome.Recovered)]
    [InlineData("unprotected-page", ErrorOutcome.Contained)]
    [InlineData("parity-frame", ErrorOutcome.ParityRebuilt)]
    [InlineData("free-frame", ErrorOutcome.FreeFrameRetired)]
    public void An_error_in_each_target_ends_as_its_protection_says_and_the_frame_is_retired(string target, ErrorOutcome expected)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows()) Assert.Skip("the fault engine runs on Linux and Windows");
        InjectResult r = InjectDemo.Run(ErrorKind.MultiBit, target, seed: 1, InjectionPath.Protection);
        Assert.Equal(expected, r.Outcome);
        Assert.True(r.Intact, $"{target}: the page does not read what it must");
        Assert.True(r.Passed);
        Assert.Equal(FrameState.Retired, r.FrameNow);
        Assert.Equal(target.EndsWith("-page"), r.Page is not null);
    }

    [Fact]
    public void Via_the_kernel_a_frame_no_guest_maps_is_refused()
    {
        Assert.Throws<ArgumentException>(() => InjectDemo.Run(ErrorKind.MultiBit, "free-frame", 1, InjectionPath.Kernel));
        Assert.Throws<ArgumentException>(() => InjectDemo.Run(ErrorKind.MultiBit, "nowhere", 1, InjectionPath.Protection));
    }
}

public class MoveDemoTests
{
    [Fact]
    public void The_demo_faults_every_first_touch_moves_the_run_scrubbed_and_every_check_holds()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows()) Assert.Skip("the fault engine runs on Linux and Windows");
        MoveDemoResult r = MoveDemo.Run(pages: 40, run: 10);
        Assert.Empty(r.Failed);
        Assert.Equal(6, r.Checks.Count);
        Assert.Equal(40UL, r.Faults);
        Assert.Equal(["vm-a", "vm-b"], r.Vms.Select(v => v.Name));
        Assert.Equal(40UL - 10 + 1, r.Vms[0].BackedPages);   // vm-a gave up the run, then re-touched one page of it
        Assert.Equal(10UL, r.Vms[1].BackedPages);
        Assert.Equal(r.ArenaFrames, (uint)r.Arena.Total);
    }
}
