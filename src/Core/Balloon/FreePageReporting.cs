// The host side of free page reporting (virtio-balloon's VIRTIO_BALLOON_F_REPORTING, Linux page_reporting):
// pages the guest reports free are unmapped and their frames go back to the arena, without a balloon.
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;

namespace PageLab.Core.Balloon;

public sealed class FreePageReporting(GuestOperatingSystem os, FreePageReportingOptions options)
{
    public FreePageReportingOptions Options { get; } = options;
    /// <summary>Frames the host took back from reports so far.</summary>
    public long FramesReturned { get; private set; }
    public long Passes { get; private set; }

    /// <summary>Takes one report from the guest and returns the reported pages' frames to the arena.
    /// A report is a claim like a balloon's: a page that is not free and backed when the host acts is
    /// skipped. Returns the frames taken.</summary>
    public int Pass(int tick)
    {
        Passes++;
        List<GuestPage> pages = os.ReportFreePages(tick, Options);
        if (pages.Count == 0) return 0;
        pages.Sort((a, b) => a.Value.CompareTo(b.Value));
        var frames = new List<HostFrame>(pages.Count);
        var buffer = new HostFrame[1];
        try
        {
            foreach (GuestPage g in pages)
            {
                if (!os.IsFree(g) || os.Vm.StateOf(g) != GuestPageState.Backed) continue;
                if (os.Vm.Unmap(g, 1, buffer) == 1) frames.Add(buffer[0]);
            }
        }
        finally
        {
            // Unmapped frames are Held; the arena zeroes them as it takes them back (also when an unmap
            // failed half way: what was taken is not left Held).
            os.Vm.Arena.Release(frames.ToArray());
            FramesReturned += frames.Count;
        }
        return frames.Count;
    }
}
