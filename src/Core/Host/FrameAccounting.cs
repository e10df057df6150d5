// The frame accounting invariant: every frame is free, owned by exactly one guest page or one VM's
// demand pool, parity, or retired; nothing is left Held between operations.
using PageLab.Core.Guest;

namespace PageLab.Core.Host;

public static class FrameAccounting
{
    /// <summary>Returns the broken rules (empty when the invariant holds).</summary>
    public static List<string> Check(HostArena arena, IReadOnlyList<GuestVm> vms)
    {
        var problems = new List<string>();
        var seen = new Dictionary<uint, string>();
        long guest = 0;
        foreach (GuestVm vm in vms)
        {
            long mapped = 0;
            for (ulong g = 0; g < vm.PageCount; g++)
            {
                if (vm.Translate(new GuestPage(g)) is not HostFrame f) continue;
                mapped++;
                string where = $"{vm.Name} gpage {g}";
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
        if (c.Guest != guest) problems.Add($"{c.Guest} Guest frames but the VMs own {guest}");
        if (c.Held != 0) problems.Add($"{c.Held} frames left Held");
        if (c.Total != arena.FrameCount) problems.Add($"states count {c.Total} frames of {arena.FrameCount}");
        return problems;
    }
}
