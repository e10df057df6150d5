// The allocation policy as a pure function: host pages shared out by shares with an idle memory tax
// (Waldspurger, OSDI 2002), within each VM's min and max, by water-filling.
namespace PageLab.Core.Scheduling;

public readonly record struct VmDemand(int Shares, double ActiveFraction, ulong MinPages, ulong MaxPages);

public static class AllocationPolicy
{
    /// <summary>ESX's default idle memory tax.</summary>
    public const double DefaultIdleTax = 0.75;

    /// <summary>Pages for each VM out of <paramref name="hostPages"/>. A VM's claim per page is
    /// shares / (f + k(1-f)) with k = 1/(1-tax): idle pages cost k times more shares than active ones.
    /// Every VM gets at least its min and at most its max; the sum never passes hostPages
    /// (if the mins alone pass it, the mins are what is returned and the caller must refuse).</summary>
    public static ulong[] Targets(IReadOnlyList<VmDemand> vms, ulong hostPages, double idleTax = DefaultIdleTax)
    {
        if (idleTax is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(idleTax), idleTax, "idle tax must be in [0, 1)");
        double k = 1 / (1 - idleTax);
        var target = new ulong[vms.Count];
        var weight = new double[vms.Count];
        var open = new List<int>();
        ulong left = hostPages;
        for (int i = 0; i < vms.Count; i++)
        {
            VmDemand d = vms[i];
            if (d.MinPages > d.MaxPages) throw new ArgumentException($"VM {i}: min {d.MinPages} pages > max {d.MaxPages}");
            double f = Math.Clamp(d.ActiveFraction, 0, 1);
            weight[i] = Math.Max(d.Shares, 0) / (f + k * (1 - f));
            target[i] = d.MinPages;
            left = left > d.MinPages ? left - d.MinPages : 0;
            if (d.MaxPages > d.MinPages && weight[i] > 0) open.Add(i);
        }
        // Water-filling: share what is left by weight; VMs that reach their max drop out.
        while (left > 0 && open.Count > 0)
        {
            double total = open.Sum(i => weight[i]);
            ulong given = 0;
            foreach (int i in open.ToList())
            {
                ulong share = (ulong)Math.Floor(left * weight[i] / total);
                ulong room = vms[i].MaxPages - target[i];
                ulong add = Math.Min(share, room);
                target[i] += add;
                given += add;
                if (target[i] == vms[i].MaxPages) open.Remove(i);
            }
            left -= given;
            if (given == 0)
            {
                // Rounding left a few pages: give them one by one to the heaviest open VMs.
                foreach (int i in open.OrderByDescending(i => weight[i]))
                {
                    if (left == 0) break;
                    target[i]++;
                    left--;
                }
                open.RemoveAll(i => target[i] == vms[i].MaxPages);
            }
        }
        return target;
    }
}
