// The frame accounting invariant, checked against the fault engine's frame table: every frame is free,
// held, owned by exactly one VM (mapped at exactly one of its pages, or in its demand pool), parity, or
// retired; the engine's counts agree with the table; nothing is left Held between operations.
using PageLab.Core.Guest;

namespace PageLab.Core.Host;

public static class FrameAccounting
{
    /// <summary>Returns the broken rules (empty when the invariant holds).</summary>
    /// <param name="heldByCaller">Frames the caller holds right now (they may be Held).</param>
    public static List<string> Check(HostArena arena, IReadOnlyList<GuestVm> vms, IReadOnlySet<uint>? heldByCaller = null)
    {
        var problems = new List<string>();
        var seen = new Dictionary<uint, string>();
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
                mapped++;
                string where = $"{vm.Name} {page}";
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
        var table = new long[5];
        for (uint f = 0; f < arena.FrameCount; f++)
        {
            FrameState s = arena.StateOf(new HostFrame(f));
            table[(int)s]++;
            if (s == FrameState.Held && heldByCaller?.Contains(f) != true) problems.Add($"{new HostFrame(f)} left Held");
        }
        if (table[0] != c.Free || table[1] != c.Held || table[2] != c.Guest || table[3] != c.Parity || table[4] != c.Retired)
            problems.Add($"the engine counts {c} but its table holds Free {table[0]}, Held {table[1]}, Guest {table[2]}, Parity {table[3]}, Retired {table[4]}");
        if (c.Guest != guest) problems.Add($"{c.Guest} Guest frames but the VMs own {guest}");
        if (c.Total != arena.FrameCount) problems.Add($"states count {c.Total} frames of {arena.FrameCount}");
        return problems;
    }
}
