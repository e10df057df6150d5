// Invariants of the pure page algorithms: the frame allocator and run coalescing
// (sorted, no duplicates, nothing lost, contiguous when it can be).
using CsCheck;
using PageLab.Core;
using PageLab.Core.Host;

namespace PageLab.Tests;

public class PropertyTests
{
    [Fact]
    public void The_allocator_never_hands_out_a_frame_twice_and_loses_none()
    {
        Gen.Select(Gen.UInt[1, 300], Gen.Int[0, 1_000_000].Array[1, 60]).Sample((capacity, ops) =>
        {
            var alloc = new FrameAllocator(capacity);
            var owned = new List<List<FrameRun>>();
            var taken = new HashSet<uint>();
            foreach (int op in ops)
            {
                if (op % 3 == 0 && owned.Count > 0)
                {
                    List<FrameRun> give = owned[op % owned.Count];
                    owned.Remove(give);
                    foreach (FrameRun r in give)
                    {
                        alloc.Free(r);
                        foreach (HostFrame f in r.Frames()) taken.Remove(f.Value);
                    }
                    continue;
                }
                uint want = (uint)(op % 40) + 1;
                var runs = new List<FrameRun>();
                bool ok = alloc.TryAllocate(want, runs);
                if (!ok)
                {
                    if (want <= capacity - taken.Count) return false;   // refused although enough was free
                    if (runs.Count != 0) return false;
                    continue;
                }
                uint got = 0;
                for (int i = 0; i < runs.Count; i++)
                {
                    if (i > 0 && runs[i].Start.Value <= runs[i - 1].Last.Value) return false;  // sorted, disjoint
                    foreach (HostFrame f in runs[i].Frames())
                        if (f.Value >= capacity || !taken.Add(f.Value)) return false;     // in range, no duplicates
                    got += runs[i].Length;
                }
                if (got != want) return false;
                owned.Add(runs);
            }
            return alloc.FreeCount == capacity - taken.Count;                           // nothing lost
        });
    }

    [Fact]
    public void The_allocator_gives_one_run_whenever_a_long_enough_free_run_exists()
    {
        Gen.Select(Gen.UInt[8, 200], Gen.Bool.Array[8, 200], Gen.UInt[1, 30]).Sample((capacity, pattern, want) =>
        {
            var alloc = new FrameAllocator(capacity);
            for (uint f = 0; f < capacity; f++)
                if (pattern[f % pattern.Length]) alloc.TryTake(new HostFrame(f));
            uint longest = 0, current = 0;
            for (uint f = 0; f < capacity; f++)
            {
                current = alloc.IsFree(new HostFrame(f)) ? current + 1 : 0;
                longest = Math.Max(longest, current);
            }
            var runs = new List<FrameRun>();
            if (!alloc.TryAllocate(want, runs)) return want > alloc.FreeCount;
            return longest >= want ? runs.Count == 1 : runs.Count > 1;
        });
    }

    [Fact]
    public void Coalescing_keeps_every_frame_in_order_in_maximal_runs()
    {
        Gen.UInt[0, 64].Array[0, 80].Sample(values =>
        {
            HostFrame[] frames = values.Select(v => new HostFrame(v)).ToArray();
            List<FrameRun> runs = PageRuns.Coalesce(frames);
            HostFrame[] back = runs.SelectMany(r => r.Frames()).ToArray();
            if (!back.SequenceEqual(frames)) return false;                               // nothing lost, same order
            for (int i = 1; i < runs.Count; i++)
                if (runs[i].Start.Value == runs[i - 1].Last.Value + 1) return false;     // maximal
            return true;
        });
    }

    [Fact]
    public void Freeing_a_free_frame_is_refused()
    {
        var alloc = new FrameAllocator(8);
        var runs = new List<FrameRun>();
        Assert.True(alloc.TryAllocate(3, runs));
        alloc.Free(runs[0]);
        var e = Assert.Throws<InvalidOperationException>(() => alloc.Free(runs[0]));
        Assert.Contains("frame 0 is already free", e.Message);
        Assert.Equal(8, alloc.FreeCount);
    }
}
