// Pure run arithmetic: compacting frame numbers into runs of consecutive frames, in the order given.
namespace PageLab.Core;

public static class PageRuns
{
    /// <summary>Splits <paramref name="frames"/> into maximal runs of consecutive ascending frames, keeping order.</summary>
    public static List<FrameRun> Coalesce(ReadOnlySpan<HostFrame> frames)
    {
        var runs = new List<FrameRun>();
        int i = 0;
        while (i < frames.Length)
        {
            int j = i + 1;
            while (j < frames.Length && frames[j].Value == frames[i].Value + (uint)(j - i)) j++;
            runs.Add(new FrameRun(frames[i], (uint)(j - i)));
            i = j;
        }
        return runs;
    }
}
