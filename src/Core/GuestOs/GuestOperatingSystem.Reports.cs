// What the guest OS reports to the host about its memory: the working-set report (its pages by age, file
// and anonymous apart) and free page reporting (free pages the host may take).
using PageLab.Core.Guest;

namespace PageLab.Core.GuestOs;

public sealed partial class GuestOperatingSystem
{
    /// <summary>The guest's working-set report (as virtio-balloon working-set reporting): every page of
    /// every process other than the balloon's, counted by age, the periods since the guest last used it
    /// (its own page tables' referenced bits, read and cleared once per call, so one call ends a period).
    /// The host chooses the bins: <paramref name="binEdgesPeriods"/>[i] is the oldest age bin i holds.
    /// Pages in swap are counted with their age too: a young page in swap is demand the guest could not
    /// keep resident. Page-cache pages are counted apart, as file pages (crosvm's buckets: anon and file bytes).</summary>
    public WorkingSetReport ReportWorkingSet(ReadOnlySpan<int> binEdgesPeriods)
    {
        for (int i = 0; i < binEdgesPeriods.Length; i++)
            if (binEdgesPeriods[i] < 0 || (i > 0 && binEdgesPeriods[i] <= binEdgesPeriods[i - 1]))
                throw new ArgumentException($"bin edges must be ascending and not negative, got [{string.Join(", ", binEdgesPeriods.ToArray())}]", nameof(binEdgesPeriods));
        var resident = new ulong[binEdgesPeriods.Length + 1];
        var swapped = new ulong[binEdgesPeriods.Length + 1];
        ulong pinned = 0;
        foreach (GuestProcess p in _processes)
        {
            if (p.Killed || p.IsBalloon) continue;
            for (ulong v = 0; v < p.VirtualPages; v++)
            {
                long pte = p.Pte[v];
                if (pte == 0) continue;
                if (p.Pinned) { pinned++; continue; }
                byte age = p.Referenced[v] ? (byte)0 : p.Age[v] == byte.MaxValue ? byte.MaxValue : (byte)(p.Age[v] + 1);
                p.Referenced[v] = false;
                p.Age[v] = age;
                int bin = 0;
                while (bin < binEdgesPeriods.Length && age > binEdgesPeriods[bin]) bin++;
                if (pte > 0) resident[bin]++;
                else swapped[bin]++;
            }
        }
        var file = new ulong[binEdgesPeriods.Length + 1];
        _cache?.CountAges(binEdgesPeriods, file);
        var bins = new WorkingSetBin[resident.Length];
        for (int i = 0; i < bins.Length; i++)
            bins[i] = new WorkingSetBin(i < binEdgesPeriods.Length ? binEdgesPeriods[i] : null, resident[i], swapped[i]) { FilePages = file[i] };
        ulong swapIns = _swapInsPeriod;
        _swapInsPeriod = 0;
        return new WorkingSetReport(bins, pinned, (ulong)_free.Count, swapIns);
    }

    /// <summary>One free-page-reporting pass at <paramref name="tick"/>: free pages that still have a host
    /// frame and have been free for the delay, at most the pass's fraction of the free pages. The guest keeps
    /// them on its free list; the host may take their frames (the next use of such a page is a demand-zero
    /// fault, as for any page the host took).</summary>
    public List<GuestPage> ReportFreePages(int tick, FreePageReportingOptions options)
    {
        _now = tick;
        var reported = new List<GuestPage>();
        int budget = (int)Math.Ceiling(_free.Count * options.FractionPerPass);
        if (budget == 0) return reported;
        var backed = new List<ulong>();
        foreach (ulong g in _free)
        {
            if (tick - _freedAt[g] < options.DelayTicks) continue;
            backed.Add(g);
        }
        if (backed.Count == 0) return reported;
        // The oldest free pages first: the LIFO free list hands out the newest first, so these are used last.
        backed.Reverse();
        foreach (ulong g in backed)
        {
            if (reported.Count == budget) break;
            if (Vm.StateOf(new GuestPage(g)) == GuestPageState.Backed) reported.Add(new GuestPage(g));
        }
        return reported;
    }
}
