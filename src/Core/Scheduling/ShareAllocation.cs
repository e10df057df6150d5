// ESX's share-based allocation as a pure function: host pages shared out by shares with an idle memory tax
// (Waldspurger, OSDI 2002), within each VM's min and max, by water-filling.
namespace PageLab.Core.Scheduling;

public readonly record struct VmDemand(int Shares, double ActiveFraction, ulong MinPages, ulong MaxPages);

public static class ShareAllocation
{
    /// <summary>ESX's default idle memory tax.</summary>
    public const double DefaultIdleTax = 0.75;

    /// <summary>Pages for each VM out of <paramref name="hostPages"/>, as ESX divides memory (Waldspurger,
    /// OSDI 2002): a VM's claim per page is shares / (f + k(1-f)) with k = 1/(1-tax), so idle pages cost k
    /// times more shares than active ones, and every VM's allocation is proportional to its claim over the
    /// <em>whole</em> allocation. Min and max are a floor and a cap on that proportional share, not a bonus:
    /// a VM gets its min only if its share falls below it, and its max if its share passes it; the rest is
    /// shared again among the VMs neither binds (water-filling). The sum never passes hostPages; if the mins
    /// alone pass it, the mins are what is returned and the caller must refuse.</summary>
    public static ulong[] Targets(IReadOnlyList<VmDemand> vms, ulong hostPages, double idleTax = DefaultIdleTax)
    {
        if (idleTax is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(idleTax), idleTax, "idle tax must be in [0, 1)");
        double k = 1 / (1 - idleTax);
        int n = vms.Count;
        var weight = new double[n];
        ulong mins = 0;
        for (int i = 0; i < n; i++)
        {
            VmDemand d = vms[i];
            if (d.MinPages > d.MaxPages) throw new ArgumentException($"VM {i}: min {d.MinPages} pages > max {d.MaxPages}");
            double f = Math.Clamp(d.ActiveFraction, 0, 1);
            weight[i] = Math.Max(d.Shares, 0) / (f + k * (1 - f));
            mins += d.MinPages;
        }
        if (mins >= hostPages) return vms.Select(d => d.MinPages).ToArray();

        // Find the level λ at which Σ clamp(λ·w_i, min_i, max_i) = hostPages. The sum only grows with λ, so
        // bisection finds it (a pin-and-release loop could cycle when every VM is pinned).
        double Total(double l)
        {
            double t = 0;
            for (int i = 0; i < n; i++) t += Math.Clamp(l * weight[i], vms[i].MinPages, vms[i].MaxPages);
            return t;
        }
        ulong maxes = vms.Aggregate(0UL, (s, d) => s + d.MaxPages);
        double level;
        if (maxes <= hostPages) level = double.PositiveInfinity;
        else
        {
            double lo = 0, hi = 1;
            while (Total(hi) < hostPages && hi < 1e300) hi *= 2;
            for (int iter = 0; iter < 200 && hi - lo > hi * 1e-15; iter++)
            {
                double mid = (lo + hi) / 2;
                if (Total(mid) < hostPages) lo = mid;
                else hi = mid;
            }
            level = lo;
        }
        var pinned = new double?[n];
        for (int i = 0; i < n; i++)
        {
            double share = double.IsPositiveInfinity(level) ? double.PositiveInfinity : level * weight[i];
            if (weight[i] <= 0 || share <= vms[i].MinPages) pinned[i] = vms[i].MinPages;
            else if (share >= vms[i].MaxPages) pinned[i] = vms[i].MaxPages;
        }
        var target = new ulong[n];
        ulong given = 0;
        for (int i = 0; i < n; i++)
        {
            double exact = pinned[i] ?? level * weight[i];
            target[i] = Math.Clamp((ulong)Math.Floor(exact), vms[i].MinPages, vms[i].MaxPages);
            given += target[i];
        }
        // Rounding left a few pages: one each to the VMs with the largest remainders that have room.
        ulong left = hostPages > given ? hostPages - given : 0;
        foreach (int i in Enumerable.Range(0, n)
                     .Where(i => pinned[i] is null)
                     .OrderByDescending(i => level * weight[i] - Math.Floor(level * weight[i])))
        {
            if (left == 0) break;
            if (target[i] < vms[i].MaxPages) { target[i]++; left--; }
        }
        return target;
    }
}
