// The guest's working-set report: its pages counted by how long ago it last used them, in bins the host
// chooses (as virtio-balloon working-set reporting). A cooperative signal sampling cannot give.
namespace PageLab.Core.GuestOs;

/// <summary>Pages last used at most <paramref name="MaxAgePeriods"/> reports ago (and more than the
/// previous bin's age; null: the oldest bin, every older page): anonymous pages resident and in the guest's
/// swap, and page-cache (file) pages.</summary>
public readonly record struct WorkingSetBin(int? MaxAgePeriods, ulong ResidentPages, ulong SwappedPages)
{
    /// <summary>Page-cache pages of this age (file pages; the others are anonymous).</summary>
    public ulong FilePages { get; init; }
    public ulong AnonPages => ResidentPages + SwappedPages;
    public ulong Pages => ResidentPages + SwappedPages + FilePages;
}

/// <param name="Bins">Youngest first.</param>
/// <param name="PinnedPages">Pages the guest can never page out (its kernel): always needed.</param>
/// <param name="FreePages">Free guest pages at the time of the report.</param>
/// <param name="SwapIns">Pages the guest read back from its swap since the previous report: demand it
/// had and could not keep resident.</param>
public sealed record WorkingSetReport(IReadOnlyList<WorkingSetBin> Bins, ulong PinnedPages, ulong FreePages, ulong SwapIns)
{
    /// <summary>Pages used within the last <paramref name="periods"/> reports (age below it), resident or
    /// swapped, plus the pinned pages. Ages are known per bin only, so <paramref name="periods"/> - 1 must
    /// be a bin edge.</summary>
    public ulong PagesUsedWithin(int periods)
    {
        if (!Bins.Any(b => b.MaxAgePeriods == periods - 1))
            throw new ArgumentOutOfRangeException(nameof(periods), periods,
                $"no bin ends at age {periods - 1}; the bins end at {string.Join(", ", Bins.Select(b => b.MaxAgePeriods?.ToString() ?? "oldest"))}");
        ulong n = PinnedPages;
        foreach (WorkingSetBin b in Bins)
            if (b.MaxAgePeriods is int edge && edge < periods) n += b.Pages;
        return n;
    }
}
