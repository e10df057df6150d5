// The model-based interleaving check (Core/Recovery/InterleavingModel.cs), short form: random operations
// from three threads in random orders, checked against the shadow after every round. Seeds are fixed so a
// failure names one that reproduces it; the long form is `pagelab campaign --model`.
using PageLab.Core.Recovery;

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
        ModelResult r = InterleavingModel.Run(seed, rounds: 1500, gcStress: true);

        Assert.True(r.Problems.Count == 0, $"seed {seed}:\n{string.Join("\n", r.Problems.Take(10))}");
        Assert.True(r.Injected > 100 && r.Reported > 50, $"{r.Injected} injected, {r.Reported} reported");
        Assert.True(r.PagesChecked > 1000 * 100, $"{r.PagesChecked} page checks");
        Assert.True(r.PagesMerged > 50 && r.CowBreaks > 20, $"{r.PagesMerged} pages merged, {r.CowBreaks} copy-on-write breaks");
    }
}
