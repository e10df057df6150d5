// The frame accounting invariant, checked against the fault engine's frame table: every frame is free,
// held, owned by exactly one VM (mapped at exactly one of its pages, or in its demand pool), parity,
// shared (mapped read-only at exactly as many guest pages, of any VMs, as its sharer count says), or
// retired; the engine's counts agree with the table; nothing is left Held between operations.
using PageLab.Core.Guest;

namespace PageLab.Core.Host;

public static class FrameAccounting
{
    /// <summary>Returns the broken rules (empty when the invariant holds).</summary>
    /// <param name="heldByCaller">Frames the caller holds right now (they may be Held).</param>
    /// <param name="everyVm">True if <paramref name="vms"/> are all the arena's live VMs: then each shared
    /// frame's sharer count must equal the pages found mapping it (false: at least those).</param>
    public static List<string> Check(HostArena arena, IReadOnlyList<GuestVm> vms, IReadOnlySet<uint>? heldByCaller = null, bool everyVm = true)
    {
        var problems = new List<string>();
        var seen = new Dictionary<uint, string>();
        var sharers = new Dictionary<uint, long>();   // shared frame -> pages found mapping it
        long guest = 0;
        foreach (GuestVm vm in vms)
        {
            if (vm.IsDisposed) continue;
            long mapped = 0;
            for (ulong g = 0; g < vm.PageCount; g++)
            {
                var page = new GuestPage(g);
                GuestPageState st = vm.StateOf(page);
                HostFrame? frame = vm.Translate(page);
                bool hasFrame = st is not (GuestPageState.Unbacked or GuestPageState.Swapped);
                if (frame is null != !hasFrame) problems.Add($"{vm.Name} {page} is {st} with frame {frame?.ToString() ?? "none"}");
                if (frame is not HostFrame f) continue;
                string where = $"{vm.Name} {page}";
                if (st == GuestPageState.Shared)
                {
                    sharers[f.Value] = sharers.GetValueOrDefault(f.Value) + 1;
                    if (arena.StateOf(f) != FrameState.Shared) problems.Add($"{where} is Shared on {f}, which is {arena.StateOf(f)}");
                    continue;
                }
                mapped++;
                if (!seen.TryAdd(f.Value, where)) problems.Add($"{f} backs both {seen[f.Value]} and {where}");
                if (arena.StateOf(f) != FrameState.Guest || arena.OwnerOf(f) != vm.Id)
                    problems.Add($"{f} backs {where} but is {arena.StateOf(f)} of owner {arena.OwnerOf(f)?.ToString() ?? "none"}");
            }
            long owned = arena.OwnedBy(vm.Id);
            if (owned != mapped + vm.PoolCount)
                problems.Add($"{vm.Name} owns {owned} frames but maps {mapped} and pools {vm.PoolCount}");
            guest += owned;
        }
        FrameCounts c = arena.Counts;
        SharingCounts sc = arena.Sharing;
        var table = new long[6];
        long sharing = 0;

        for (uint f = 0; f < arena.FrameCount; f++)
        {
            var frame = new HostFrame(f);
            FrameState s = arena.StateOf(frame);
            table[(int)s]++;
            if (s == FrameState.Held && heldByCaller?.Contains(f) != true) problems.Add($"{frame} left Held");
            if (s != FrameState.Shared) continue;
            uint n = arena.SharersOf(frame);
            sharing += n;
            long found = sharers.GetValueOrDefault(f);
            if (n == 0) problems.Add($"shared {frame} has no sharer");
            if (found > n || (everyVm && found != n)) problems.Add($"shared {frame} counts {n} sharers but {found} pages map it");
        }
        foreach (uint f in sharers.Keys)
            if (arena.StateOf(new HostFrame(f)) != FrameState.Shared) problems.Add($"{new HostFrame(f)} is mapped Shared but is {arena.StateOf(new HostFrame(f))}");
        if (everyVm && sharers.Values.Sum() != sc.SharingPages)
            problems.Add($"the engine counts {sc.SharingPages} sharing pages but the VMs have {sharers.Values.Sum()} Shared pages");
        if (sc.SharedFrames != c.Shared || sc.SharingPages != sharing)
            problems.Add($"the engine counts {sc} but its table holds {c.Shared} shared frames with {sharing} sharers");
        if (table[0] != c.Free || table[1] != c.Held || table[2] != c.Guest || table[3] != c.Parity || table[4] != c.Retired || table[5] != c.Shared)
            problems.Add($"the engine counts {c} but its table holds Free {table[0]}, Held {table[1]}, Guest {table[2]}, Parity {table[3]}, Retired {table[4]}, Shared {table[5]}");
        if (c.Guest != guest) problems.Add($"{c.Guest} Guest frames but the VMs own {guest}");
        if (c.Total != arena.FrameCount) problems.Add($"states count {c.Total} frames of {arena.FrameCount}");
        return problems;
    }
}
