// The miss-curve policy (mrc): each VM's paging rate as a function of its allocation, read off its
// working-set report, and host pages handed out where they save the most paging, moved only when worth it.
using PageLab.Core.GuestOs;

namespace PageLab.Core.Scheduling;

/// <summary>A VM's paging per sampling period as a function of the host pages it is given: piecewise linear
/// through <see cref="Points"/>, non-increasing and convex (so its marginal saving per page only falls, which
/// makes handing out pages greedily by that saving optimal).</summary>
public sealed class MissCurve
{
    private MissCurve(IReadOnlyList<(double Pages, double Misses)> points) => Points = points;

    /// <summary>(allocation in pages, guest page faults per period), allocation increasing. Below the first
    /// point the VM cannot run (its kernel and the guest's free reserve); past the last it faults no more.</summary>
    public IReadOnlyList<(double Pages, double Misses)> Points { get; }
    /// <summary>Pages the VM needs before any page saves a fault: its pinned pages and the guest's reserve.</summary>
    public double BasePages => Points[0].Pages;
    /// <summary>Pages past which more memory saves nothing: the base plus every page the guest reported.</summary>
    public double FootprintPages => Points[^1].Pages;

    /// <summary>Faults per period at <paramref name="pages"/> (at the base below it).</summary>
    public double MissesAt(double pages)
    {
        if (pages <= Points[0].Pages) return Points[0].Misses;
        for (int i = 1; i < Points.Count; i++)
            if (pages <= Points[i].Pages)
            {
                (double x0, double y0) = Points[i - 1];
                (double x1, double y1) = Points[i];
                return y0 + (y1 - y0) * (pages - x0) / (x1 - x0);
            }
        return Points[^1].Misses;
    }

    /// <summary>The curve's pieces from the base up: pages in the piece and faults per period each page of it
    /// saves, the saving falling from one piece to the next.</summary>
    public IEnumerable<(double Pages, double SavingPerPage)> Pieces()
    {
        for (int i = 1; i < Points.Count; i++)
        {
            double len = Points[i].Pages - Points[i - 1].Pages;
            if (len > 0) yield return (len, (Points[i - 1].Misses - Points[i].Misses) / len);
        }
    }

    /// <summary>The curve of a working-set report, by Denning's working-set theory: W(T), the pages used within
    /// the last T periods, is read at the bins' edges (T = edge + 1); the rate at which pages come back into
    /// the window, W'(T), is the fault rate of a memory holding W(T) pages (a page whose last use is older than
    /// what the memory keeps faults when it is used again). Each bin gives one point: its slope (pages over
    /// the periods it spans) at the middle of its pages. For pages touched r times a period at random the
    /// curve is the straight line r · (pages − allocation). The oldest bin (no edge) faults next to never: the
    /// curve reaches 0 at the whole footprint. Pinned pages and <paramref name="reservePages"/> come first.</summary>
    /// <param name="growingPages">Pages the guest is expected to start using within the next period (counted
    /// as used in the last one): a growing working set is short of them by the next decision otherwise.</param>
    public static MissCurve FromReport(WorkingSetReport report, double reservePages, double growingPages = 0)
    {
        double basePages = report.PinnedPages + reservePages;
        var points = new List<(double, double)>();
        double cumulative = 0, lastEdge = -1;
        foreach (WorkingSetBin bin in report.Bins)
        {
            if (bin.MaxAgePeriods is not int edge)
            {
                cumulative += bin.Pages;
                break;
            }
            double pages = bin.Pages + (lastEdge < 0 ? growingPages : 0);
            double span = edge - lastEdge;                         // periods this bin's window adds
            if (pages > 0) points.Add((basePages + cumulative + pages / 2.0, pages / span));
            cumulative += pages;
            lastEdge = edge;
        }
        // At the base the curve runs on from its first two points (a memory of no pages faults on every use).
        double start = points.Count switch
        {
            0 => 0,
            1 => 2 * points[0].Item2,
            _ => points[0].Item2 + (points[0].Item2 - points[1].Item2) * (points[0].Item1 - basePages) / Math.Max(1, points[1].Item1 - points[0].Item1),
        };
        points.Insert(0, (basePages, Math.Max(start, points.Count > 0 ? points[0].Item2 : 0)));
        // With every page it has resident the VM faults no more (pages beyond its footprint save nothing).
        points.Add((Math.Max(basePages + cumulative, points[^1].Item1), 0));
        return new MissCurve(LowerHull(points));
    }

    /// <summary>A straight line: <paramref name="demand"/> pages past the base, each saving
    /// <paramref name="perPage"/> faults a period (for a VM that gives no report: its sampled working set).</summary>
    public static MissCurve Line(double basePages, double demand, double perPage) =>
        new(demand <= 0 ? [(basePages, 0), (basePages, 0)] : [(basePages, demand * perPage), (basePages + demand, 0)]);

    /// <summary>For tests and callers that know the curve: through <paramref name="points"/> (made convex).</summary>
    public static MissCurve Through(IEnumerable<(double Pages, double Misses)> points) => new(LowerHull(points.ToList()));

    // The lower convex hull, non-increasing: a measured curve is bumpy; greedy allocation needs diminishing returns.
    private static List<(double, double)> LowerHull(List<(double X, double Y)> pts)
    {
        pts.Sort((a, b) => a.X.CompareTo(b.X));
        var hull = new List<(double X, double Y)>();
        foreach ((double X, double Y) p0 in pts)
        {
            (double X, double Y) p = (p0.X, hull.Count > 0 ? Math.Min(p0.Y, hull[^1].Y) : p0.Y);
            if (hull.Count > 0 && p.X - hull[^1].X < 1e-9) { hull[^1] = (hull[^1].X, Math.Min(hull[^1].Y, p.Y)); continue; }
            while (hull.Count >= 2)
            {
                (double X, double Y) a = hull[^2], b = hull[^1];
                double cross = (b.X - a.X) * (p.Y - a.Y) - (b.Y - a.Y) * (p.X - a.X);
                if (cross <= 0) hull.RemoveAt(hull.Count - 1);
                else break;
            }
            hull.Add(p);
        }
        if (hull.Count == 1) hull.Add(hull[0]);
        return hull;
    }
}

/// <summary>The miss-curve policy. Each VM's paging as a function of its allocation comes from its own
/// working-set report (<see cref="MissCurve.FromReport"/>; Zhou et al., ASPLOS 2004, and Zhao et al., VEE
/// 2009, build the same curve from page-reuse distances). Host pages go first to every VM's base (kernel and
/// the guest's reserve), then piece by piece to the VM whose next pages save the most faults per page; pieces
/// that save about as much (within <see cref="TieTolerance"/>) are split by shares; min and max are floor and
/// cap. What no curve claims (every footprint fits) is shared by ESX's rule with its idle tax.
/// Damping: the allocations move towards that target only as far as the faults the move is expected to save
/// over <see cref="HorizonPeriods"/> periods beat its cost (<see cref="MoveCostPerPage"/> guest paging per
/// page moved: the donor's page-out and balloon work), and a VM's allocation turning back the way it came costs
/// <see cref="ReversalCostFactor"/> times as much (hysteresis).</summary>
public sealed class MissCurvePolicy : IAllocationPolicy
{
    public string Name => "mrc";
    /// <summary>Pages the guest keeps free (its high watermark), below which no page saves a fault.</summary>
    public double ReservePages { get; init; } = 96;
    /// <summary>Pieces whose saving per page is within this fraction of each other are split by shares.</summary>
    public double TieTolerance { get; init; } = 0.1;
    public double HorizonPeriods { get; init; } = 3;
    /// <summary>Paging per fault saved: a page the guest reads back in was (or will be) written out.</summary>
    public double PagingPerFault { get; init; } = 2;
    public double MoveCostPerPage { get; init; } = 1;
    public double ReversalCostFactor { get; init; } = 4;
    /// <summary>A change against the VM's last one within this many periods is a reversal.</summary>
    public int ReversalWindowPeriods { get; init; } = 2;
    /// <summary>Periods the reports need before ages mean anything (at boot every page is as young as the
    /// guest): the allocations stay as they are until then.</summary>
    public int WarmupPeriods { get; init; } = 3;

    // Each VM's last change (+1 grew, -1 shrank, and the period), for the hysteresis; and its footprint at
    // the last decision (pages in its report), whose growth the curve expects to go on for a period.
    private readonly Dictionary<string, (int Direction, int Period)> _lastChange = new();
    private readonly Dictionary<string, ulong> _footprint = new();

    public ulong EstimatePages(VmSignals vm) => vm.WorkingSet is { } r
        ? r.PagesUsedWithin(6) + (ulong)ReservePages
        : (ulong)Math.Round((vm.SampledActiveFraction ?? 0) * vm.HeldPages);

    /// <summary>The VM's miss curve: from its report, else a line over its sampled working set.</summary>
    public MissCurve CurveOf(VmSignals v, ulong pinnedIfNoReport = 0) => v.WorkingSet is { } r
        ? MissCurve.FromReport(r, ReservePages, GrowthOf(v.Name, r))
        : MissCurve.Line(pinnedIfNoReport + ReservePages, Math.Ceiling(v.SampledFractionOfAllocation * v.AllocationPages), 1);

    private double GrowthOf(string vm, WorkingSetReport r)
    {
        ulong now = r.Bins.Aggregate(0UL, (s, b) => s + b.Pages);
        return _footprint.TryGetValue(vm, out ulong before) && now > before ? now - before : 0;
    }

    public ulong[] Allocate(AllocationRequest request)
    {
        IReadOnlyList<VmSignals> vms = request.Vms;
        MissCurve[] curves = vms.Select(v => CurveOf(v)).ToArray();
        foreach (VmSignals v in vms)
            if (v.WorkingSet is { } r) _footprint[v.Name] = r.Bins.Aggregate(0UL, (s, b) => s + b.Pages);
        ulong[] now = vms.Select(v => v.AllocationPages).ToArray();
        if (request.Period < WarmupPeriods) return now;
        ulong[] target = Target(request, curves);
        // Moves towards the target, all the way or part of it, and keeps the one worth most (or none).
        ulong[] best = now;
        double bestNet = 0;
        foreach (double part in new[] { 1.0, 0.5, 0.25 })
        {
            ulong[] c = Toward(vms, now, target, part);
            double saved = 0, cost = 0;
            for (int i = 0; i < vms.Count; i++)
            {
                saved += curves[i].MissesAt(now[i]) - curves[i].MissesAt(c[i]);
                long d = (long)c[i] - (long)now[i];
                bool reverses = d != 0 && _lastChange.TryGetValue(vms[i].Name, out var last) && last.Direction == -Math.Sign(d)
                                && request.Period - last.Period <= ReversalWindowPeriods;
                // A page costs when taken from a VM; pages no VM was allocated cost nothing to hand out,
                // but giving back what was just taken (or taking what was just given) costs again.
                if (d < 0) cost += -d * MoveCostPerPage * (reverses ? ReversalCostFactor : 1);
                else if (reverses) cost += d * MoveCostPerPage * (ReversalCostFactor - 1);
            }
            double net = saved * PagingPerFault * HorizonPeriods - cost;
            if (net > bestNet) (best, bestNet) = (c, net);
        }
        for (int i = 0; i < vms.Count; i++)
            if (best[i] != now[i]) _lastChange[vms[i].Name] = (best[i] > now[i] ? 1 : -1, request.Period);
        return best;
    }

    // `part` of the way from now to target, rounded so the total never passes the target's.
    private static ulong[] Toward(IReadOnlyList<VmSignals> vms, ulong[] now, ulong[] target, double part)
    {
        var c = new ulong[now.Length];
        for (int i = 0; i < now.Length; i++)
        {
            double d = ((double)target[i] - now[i]) * part;
            c[i] = (ulong)Math.Clamp((long)now[i] + (long)Math.Floor(d), (long)vms[i].MinPages, (long)vms[i].MaxPages);
        }
        return c;
    }

    /// <summary>The allocation the curves ask for, before damping.</summary>
    public ulong[] Target(AllocationRequest request) => Target(request, request.Vms.Select(v => CurveOf(v)).ToArray());

    private ulong[] Target(AllocationRequest request, MissCurve[] curves)
    {
        IReadOnlyList<VmSignals> vms = request.Vms;
        int n = vms.Count;
        var x = new double[n];
        // Floors first, then each VM's base (it cannot run below it): by shares if the bases pass the host.
        ulong[] bases = ShareAllocation.Targets(
            vms.Select((v, i) => new VmDemand(v.Shares, 1, v.MinPages, Math.Clamp((ulong)Math.Ceiling(curves[i].BasePages), v.MinPages, v.MaxPages))).ToList(),
            request.HostPages, request.IdleTax);
        for (int i = 0; i < n; i++) x[i] = bases[i];
        double left = request.HostPages - x.Sum();
        // Every VM's pieces past what it has, most faults saved per page first.
        var pieces = new List<(int Vm, double Pages, double Saving)>();
        for (int i = 0; i < n; i++)
        {
            double from = curves[i].BasePages, have = x[i], cap = vms[i].MaxPages;
            foreach ((double len, double saving) in curves[i].Pieces())
            {
                double lo = Math.Max(from, have), hi = Math.Min(from + len, cap);
                // A piece that saves nothing measurable is still pages the guest has: it is claimed before
                // what no curve claims (last, and split by shares if the host runs out).
                if (hi > lo) pieces.Add((i, hi - lo, Math.Max(0, saving)));
                from += len;
            }
        }
        pieces.Sort((a, b) => b.Saving.CompareTo(a.Saving));
        for (int g = 0; g < pieces.Count && left > 0;)
        {
            // A group: pieces saving about as much as the group's first.
            int end = g;
            while (end < pieces.Count && pieces[end].Saving >= pieces[g].Saving * (1 - TieTolerance)) end++;
            var want = new double[n];
            for (int k = g; k < end; k++) want[pieces[k].Vm] += pieces[k].Pages;
            double total = want.Sum();
            if (total <= left)
            {
                for (int i = 0; i < n; i++) x[i] += want[i];
                left -= total;
            }
            else
            {
                // Not enough for the group: split what is left by shares, no VM past what it wants.
                double[] give = ByShares(vms, want, left);
                for (int i = 0; i < n; i++) x[i] += give[i];
                left = 0;
            }
            g = end;
        }
        var target = x.Select((v, i) => Math.Clamp((ulong)Math.Floor(v), vms[i].MinPages, vms[i].MaxPages)).ToArray();
        ulong sum = target.Aggregate(0UL, (s, t) => s + t);
        if (sum >= request.HostPages) return target;
        // What no curve claims: ESX's rule, with what the curves claimed as each VM's floor.
        return ShareAllocation.Targets(
            vms.Select((v, i) => new VmDemand(v.Shares, target[i] == 0 ? 0 : Math.Min(1, curves[i].FootprintPages / Math.Max(target[i], v.AllocationPages)), target[i], v.MaxPages)).ToList(),
            request.HostPages, request.IdleTax);
    }

    // `pages` split in proportion to shares, none past its `want` (water-filling).
    private static double[] ByShares(IReadOnlyList<VmSignals> vms, double[] want, double pages)
    {
        var give = new double[want.Length];
        var open = Enumerable.Range(0, want.Length).Where(i => want[i] > 0).ToList();
        while (pages > 1e-9 && open.Count > 0)
        {
            double shares = open.Sum(i => (double)vms[i].Shares);
            double round = pages;
            foreach (int i in open.ToList())
            {
                double g = Math.Min(round * vms[i].Shares / shares, want[i] - give[i]);
                give[i] += g;
                pages -= g;
                if (want[i] - give[i] <= 1e-9) open.Remove(i);
            }
            if (open.Count == 0 || round - pages < 1e-9) break;
        }
        return give;
    }
}
