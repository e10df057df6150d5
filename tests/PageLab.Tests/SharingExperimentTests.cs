// The same-image experiment (Core/Sharing/ReclamationExperiment.cs), small: sharing takes back the
// image's duplicate frames, ESX's order tops it up with the balloon, and no read ever sees wrong bytes.
using PageLab.Core.Sharing;
using PageLab.Lab.Experiments;

namespace PageLab.Tests;

public class SharingExperimentTests
{
    private static readonly ReclamationOptions Small = new(Vms: 3, KernelPages: 32, FilePages: 32, AppPages: 32, FreePages: 32,
        ReclaimFrames: 160, Touches: 4000);

    [Fact]
    public void Sharing_takes_back_every_duplicate_image_frame_and_ESX_order_tops_it_up_with_the_balloon()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows()) Assert.Skip("the fault engine runs on Linux and Windows");
        ReclamationResult share = ReclamationExperiment.Run(ReclamationOrder.ShareOnly, Small);
        ReclamationResult esx = ReclamationExperiment.Run(ReclamationOrder.ShareThenBalloonThenSwap, Small);

        foreach (ReclamationResult r in new[] { share, esx })
        {
            Assert.True(r.Problems.Count == 0, $"{r.Order}: {string.Join("\n", r.Problems)}");
            Assert.Equal(0, r.WrongReads);
        }
        Assert.Equal(2 * (32 + 32), share.BySharing);      // two of three copies of the kernel and file pages
        Assert.Equal(0, share.ByBalloon);
        Assert.True(share.ScanCpu > TimeSpan.Zero);
        Assert.True(share.CowBreaks > 0, "file-page writes broke no sharing");
        Assert.Equal(128, esx.BySharing);
        Assert.True(esx.Saved >= Small.ReclaimFrames, $"ESX order took back {esx.Saved} of {Small.ReclaimFrames}");
        Assert.True(esx.ByBalloon > 0);
    }

    [Fact]
    public void Ballooning_alone_makes_the_guests_page_and_host_swap_alone_makes_the_host_swap()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows()) Assert.Skip("the fault engine runs on Linux and Windows");
        ReclamationResult balloon = ReclamationExperiment.Run(ReclamationOrder.BalloonOnly, Small with { ReclaimFrames = 200 });
        ReclamationResult swap = ReclamationExperiment.Run(ReclamationOrder.HostSwapOnly, Small);

        Assert.True(balloon.Problems.Count == 0 && balloon.WrongReads == 0, string.Join("\n", balloon.Problems));
        Assert.True(swap.Problems.Count == 0 && swap.WrongReads == 0, string.Join("\n", swap.Problems));
        Assert.True(balloon.Saved >= 200, $"balloons took back {balloon.Saved}");
        Assert.True(balloon.GuestSwapOuts > 0, "more than the guests' free memory was ballooned, yet no guest paged");
        Assert.Equal(0, balloon.BySharing);
        Assert.True(swap.ByHostSwap >= Small.ReclaimFrames && swap.HostSwapIns > 0);
        Assert.Equal(0, swap.GuestSwapOuts);
    }
}
