// Invariants of the page algorithms: the engine's frame allocator (on a real arena) and run coalescing
// (sorted, no duplicates, nothing lost, contiguous when it can be).
using CsCheck;
using PageLab.Core;
using PageLab.Core.Host;

namespace PageLab.Tests;

public class PropertyTests
{
    [Fact]
    public void The_engine_never_hands_out_a_frame_twice_and_loses_none()
    {
        Gen.Select(Gen.UInt[1, 300], Gen.Int[0, 1_000_000].Array[1, 60]).Sample((capacity, ops) =>
        {
            using var t = new TestArena(capacity);
            HostArena arena = t.Arena;
            var owned = new List<HostFrame[]>();
            var taken = new HashSet<uint>();
            foreach (int op in ops)
            {
                if (op % 3 == 0 && owned.Count > 0)
                {
                    HostFrame[] give = owned[op % owned.Count];
                    owned.Remove(give);
                    arena.Release(give);
                    foreach (HostFrame f in give) taken.Remove(f.Value);
                    continue;
                }
                uint want = (uint)(op % 40) + 1;
                HostFrame[] got;
                try { got = arena.Allocate(want); }
                catch (ArenaExhaustedException)
                {
                    if (want <= capacity - taken.Count) return false;   // refused although enough was free
                    continue;
                }
                if (got.Length != want) return false;
                for (int i = 0; i < got.Length; i++)
                {
                    if (i > 0 && got[i].Value <= got[i - 1].Value) return false;   // ascending, no duplicates
                    if (got[i].Value >= capacity || !taken.Add(got[i].Value)) return false;
                    if (arena.StateOf(got[i]) != FrameState.Held) return false;
                }
                owned.Add(got);
            }
            FrameCounts c = arena.Counts;
            return c.Free == capacity - taken.Count && c.Held == taken.Count;  // nothing lost
        }, iter: 60);
    }

    [Fact]
    public void The_engine_gives_one_run_whenever_a_long_enough_free_run_exists()
    {
        Gen.Select(Gen.UInt[8, 200], Gen.Bool.Array[8, 200], Gen.UInt[1, 30]).Sample((capacity, pattern, want) =>
        {
            using var t = new TestArena(capacity);
            HostArena arena = t.Arena;
            HostFrame[] all = arena.Allocate(capacity);
            arena.Release(all.Where(f => !pattern[f.Value % pattern.Length]).ToArray());
            uint longest = 0, current = 0;
            for (uint f = 0; f < capacity; f++)
            {
                current = arena.StateOf(new HostFrame(f)) == FrameState.Free ? current + 1 : 0;
                longest = Math.Max(longest, current);
            }
            HostFrame[] got;
            try { got = arena.Allocate(want); }
            catch (ArenaExhaustedException) { return want > arena.Counts.Free; }
            bool oneRun = got.Zip(got.Skip(1)).All(p => p.Second.Value == p.First.Value + 1);
            return longest >= want ? oneRun : !oneRun;
        }, iter: 60);
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
    public void Releasing_a_free_frame_is_refused_and_a_retired_frame_never_returns()
    {
        using var t = new TestArena(8);
        HostFrame[] frames = t.Arena.Allocate(3);
        t.Arena.Release(frames[..1]);
        var e = Assert.Throws<FrameStateException>(() => t.Arena.Release(frames[..1]));
        Assert.Contains("frame 0 is Free", e.Message);
        t.Arena.Retire(frames[1]);
        Assert.Throws<FrameStateException>(() => t.Arena.Release([frames[1]]));
        HostFrame[] rest = t.Arena.Allocate(6);                     // every frame but the retired one
        Assert.DoesNotContain(frames[1], rest);
        Assert.Throws<ArenaExhaustedException>(() => t.Arena.Allocate(1));
        Assert.Equal(new FrameCounts(0, 7, 0, 0, 1), t.Arena.Counts);
    }
}
