// The scheduler's part of page sharing, the first reclamation mechanism: one scanner batch per step, and
// each VM's credit (frames sharing saves it, left out of its balloon target, smoothed over a period) and charge.
using PageLab.Core.Host;
using PageLab.Core.Sharing;

namespace PageLab.Core.Scheduling;

public sealed partial class MemoryScheduler
{
    // Sharing, the first mechanism: one scanner batch over the VMs that opted in, then each VM's part of what
    // sharing saves (its credit, which its balloon target leaves out) and of the shared frames (its charge,
    // counted as held). A VM's part is its shared pages times saved (or shared) frames over all sharing pages,
    // so the credits add up to the frames saved and the charges to the shared frames.
    private (int Scanned, int Merged) Share()
    {
        if (!Options.Reclamation.HasFlag(Reclamation.Share)) return (0, 0);
        Scanner ??= new PageScanner(Arena, _vms.Select(v => v.Vm), new ScannerOptions(Options.ScanPagesPerStep));
        long before = Scanner.Metrics.PagesScanned;
        int merged = Scanner.ScanBatch(Options.ScanPagesPerStep);
        int scanned = (int)(Scanner.Metrics.PagesScanned - before);
        UpdateSharingCredits();
        return (scanned, merged);
    }

    // Each VM's credit and charge from the engine's counts now. Called after the scan, and again at the end of
    // the step: the guest paging out a shared page or writing one (the balloon's own writes, too) changes them.
    // The charge is what the VM costs the host now and follows every change; the credit its balloon target
    // counts moves at once only on a jump (a scan merging a run of pages), else once a period (the mean).
    private void UpdateSharingCredits(bool endOfStep = false)
    {
        if (Scanner is null) return;
        SharingCounts all = Arena.Sharing;
        foreach (ScheduledVm v in _vms)
        {
            long mine = all.SharingPages > 0 ? v.Vm.SharedPages : 0; // a VM that opted out keeps what it shared
            long credit = Math.Max(0, all.SharingPages == 0 ? 0 : mine * all.FramesSaved / all.SharingPages);
            v.SharingCreditPages = (ulong)credit;
            v.SharingChargeFrames = Math.Max(0, mine - credit);
            if (Math.Abs(credit - (long)v.TargetSharingCreditPages) >= Math.Max(SharingCreditJump, (long)v.TargetSharingCreditPages / 20))
                v.TargetSharingCreditPages = (ulong)credit;
            if (!endOfStep) continue;
            v.CreditSum += credit;
            v.CreditSteps++;
        }
    }

    /// <summary>A change in a VM's measured sharing credit the balloon target takes at once (pages; or a
    /// twentieth of the credit if more): smaller ones wait for the period's mean.</summary>
    public const long SharingCreditJump = 32;

    // At the end of a period the credit becomes the period's mean, unless that is within a page or so of it
    // (one copy-on-write break moves the mean by less than a page).
    private static void SmoothSharingCredit(ScheduledVm v)
    {
        if (v.CreditSteps == 0) return;
        double mean = v.CreditSum / v.CreditSteps;
        if (Math.Abs(mean - v.TargetSharingCreditPages) >= 2) v.TargetSharingCreditPages = (ulong)Math.Round(mean);
        v.CreditSum = 0;
        v.CreditSteps = 0;
    }
}
