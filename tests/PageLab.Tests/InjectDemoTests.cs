// `pagelab inject`'s setup (Lab's InjectDemo): one real memory error into each target of a small protected VM
// ends as the protection says, with the page's bytes checked and the frame retired.
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
