// The page-sharing scanner (Core/Sharing/PageScanner.cs) on real guest memory: what it merges, what it
// must not, its metrics, and its rate.
using System.Runtime.InteropServices;
using PageLab.Core;
using PageLab.Core.Balloon;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core.Sharing;

namespace PageLab.Tests;

public class SharingScannerTests
{
    private static ulong Unique(int vm, ulong page, int word) => (ulong)HashCode.Combine(vm, page, word) << 32 | (uint)word;

    private static void FillUnique(GuestVm vm, ulong page, int seed)
    {
        Span<ulong> w = MemoryMarshal.Cast<byte, ulong>(vm.Page(new GuestPage(page)));
        for (int i = 0; i < w.Length; i++) w[i] = Unique(seed, page, i);
    }

    private static bool ReadsUnique(GuestVm vm, ulong page, int seed)
    {
        ReadOnlySpan<ulong> w = MemoryMarshal.Cast<byte, ulong>(vm.Page(new GuestPage(page)));
        for (int i = 0; i < w.Length; i++)
            if (w[i] != Unique(seed, page, i)) return false;
        return true;
    }

    // Pages 0-15 the same in both VMs (a "same image"), 16-31 zero, 32-47 a balloon's agreed value,
    // 48-63 each VM's own.
    private static void Image(GuestVm vm, int own)
    {
        vm.Back(new GuestPage(0), 64);
        for (ulong g = 0; g < 16; g++) FillUnique(vm, g, 1);
        for (ulong g = 32; g < 48; g++) MemoryMarshal.Cast<byte, ulong>(vm.Page(new GuestPage(g))).Fill(BalloonTag.Magic);
        for (ulong g = 48; g < 64; g++) FillUnique(vm, g, own);
    }

    [Fact]
    public void One_pass_merges_same_content_across_VMs_and_collapses_zero_and_balloon_pages_onto_one_frame_per_value()
    {
        using var t = new TestArena(256);
        GuestVm a = t.Vm("a", 64), b = t.Vm("b", 64), off = t.Vm("off", 64);
        a.EnableSharing();
        b.EnableSharing();
        Image(a, 2);
        Image(b, 3);
        Image(off, 4);                                            // not opted in: never touched
        long freeBefore = t.Arena.Counts.Free;
        var scanner = new PageScanner(t.Arena, [a, b, off]);

        scanner.ScanPass();

        SharingMetrics m = scanner.Metrics;
        Assert.Equal(128, m.PagesScanned);                       // the opted-out VM's pages are not scanned
        Assert.Equal(16 + 1 + 1, m.SharedFrames);                // 16 image pages, one zero frame, one balloon-value frame
        Assert.Equal(32 + 32 + 32, m.SharingPages);
        Assert.Equal(96 - 18, m.FramesSaved);
        Assert.Equal(64, m.UniformPagesMerged);
        Assert.Equal(freeBefore + 78, t.Arena.Counts.Free);     // the memory really came back
        Assert.Equal(FrameState.Shared, t.Arena.StateOf(a.Translate(new GuestPage(16))!.Value));
        Assert.Equal(a.Translate(new GuestPage(16)), b.Translate(new GuestPage(31))); // one zero frame for both VMs
        Assert.Equal(a.Translate(new GuestPage(5)), b.Translate(new GuestPage(5)));
        Assert.NotEqual(a.Translate(new GuestPage(5)), a.Translate(new GuestPage(6)));
        for (ulong g = 48; g < 64; g++)
        {
            Assert.Equal(GuestPageState.Backed, a.StateOf(new GuestPage(g)));
            Assert.True(ReadsUnique(a, g, 2) && ReadsUnique(b, g, 3));
        }
        for (ulong g = 0; g < 64; g++) Assert.Equal(GuestPageState.Backed, off.StateOf(new GuestPage(g)));
        for (ulong g = 0; g < 16; g++) Assert.True(ReadsUnique(a, g, 1) && ReadsUnique(b, g, 1));
        List<string> problems = FrameAccounting.Check(t.Arena, [a, b, off]);
        Assert.True(problems.Count == 0, string.Join("\n", problems));

        // Guests write: copy-on-write breaks, counted; the other VM keeps its bytes.
        b.Page(new GuestPage(5))[0] ^= 0xFF;
        b.Page(new GuestPage(20))[0] = 1;
        Assert.Equal(2UL, scanner.Metrics.CowBreaks);
        Assert.True(ReadsUnique(a, 5, 1));
        Assert.Equal(0, a.Page(new GuestPage(20))[0]);
        Assert.Equal(18, scanner.Metrics.SharedFrames);          // page 5's frame keeps a's page: still shared
        Assert.Equal(94, scanner.Metrics.SharingPages);
        problems = FrameAccounting.Check(t.Arena, [a, b, off]);
        Assert.True(problems.Count == 0, string.Join("\n", problems));
    }

    [Fact]
    public void A_page_changed_between_hash_and_merge_is_not_merged()
    {
        using var t = new TestArena(64);
        GuestVm a = t.Vm("a", 4), b = t.Vm("b", 4);
        a.EnableSharing();
        b.EnableSharing();
        a.Back(new GuestPage(0), 4);
        b.Back(new GuestPage(0), 4);
        for (ulong g = 0; g < 4; g++) { FillUnique(a, g, 7); FillUnique(b, g, 7); }
        var scanner = new PageScanner(t.Arena, [a, b]);
        scanner.ScanBatch(4);                                    // a's pages hashed, waiting for a match
        b.Page(new GuestPage(2))[100] ^= 1;                      // b's page 2 now differs
        scanner.ScanBatch(4);

        Assert.Equal(GuestPageState.Shared, b.StateOf(new GuestPage(1)));
        Assert.Equal(GuestPageState.Backed, b.StateOf(new GuestPage(2)));
        Assert.Equal(6, scanner.Metrics.SharingPages);
    }

    [Fact]
    public void The_scanner_keeps_to_its_configured_rate()
    {
        using var t = new TestArena(4096);
        GuestVm a = t.Vm("a", 2048);
        a.EnableSharing();
        a.Back(new GuestPage(0), 2048);
        for (ulong g = 0; g < 2048; g++) FillUnique(a, g, 9);    // nothing to merge: pure scanning
        var scanner = new PageScanner(t.Arena, [a], ScannerOptions.KsmDefault);
        using var stop = new CancellationTokenSource(TimeSpan.FromMilliseconds(600));

        scanner.Run(stop.Token);

        SharingMetrics m = scanner.Metrics;
        // 100 pages per 20 ms is at most 5,000 pages/s (plus one batch); the sleep dominates, so well above 1,000.
        Assert.InRange(m.ScanRatePagesPerSecond, 1000, 5000 * 1.25);
        Assert.True(m.ThroughputPagesPerSecond > 10 * m.ScanRatePagesPerSecond, $"throughput {m.ThroughputPagesPerSecond:F0} pages/s");
        Assert.Equal(0, m.SharedFrames);
    }
}
