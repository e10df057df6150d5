// The hypervisor side of ballooning for one VM: identifies the host frames behind balloon pages (by
// translation of the app's reports, or by scanning content), verifies the agreed value, reclaims frames,
// and backs pages the balloon gives back. Nothing the guest says is trusted.
//
// Order of a reclaim, and why: a report is refused unless its page holds the agreed value; the accepted
// pages are unmapped, run by run, and only then is each frame zeroed in full through the host's view,
// where the guest can no longer write it. So no byte the source wrote (before or after the check)
// reaches another VM, whatever the value check found.
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;

namespace PageLab.Core.Balloon;

/// <summary>Why a balloon report was refused.</summary>
public enum RefusalReason { NotItsPage, NotResident, ClaimMismatch, Duplicate, NotBacked, ValueMismatch, Poisoned }

/// <summary>What one reclaim step did: frames taken (Held, all zero) and reports refused by reason.</summary>
public sealed record ReclaimResult(HostFrame[] Frames, IReadOnlyDictionary<RefusalReason, int> Refused)
{
    public int RefusedCount => Refused.Values.Sum();
}

public sealed class BalloonBackend
{
    // Per guest page: the balloon vpn + 1 whose frame the hypervisor took (0 = none). The list holds the
    // same pages (each once: _listed) so ActualPages walks only those, not every page of the VM (the
    // whole-array walk measured 30 ns more per page moved); entries whose slot went to 0 are dropped
    // when it is walked.
    private readonly ulong[] _reclaimedVpn;
    private readonly List<ulong> _reclaimedPages = new();
    private readonly bool[] _listed;
    private readonly bool[] _acceptedNow;
    private readonly Dictionary<RefusalReason, long> _refusedTotal = new();
    private int _stepsWithoutProgress;

    public BalloonBackend(GuestOperatingSystem os, BalloonApplication app)
    {
        Os = os;
        App = app;
        _reclaimedVpn = new ulong[os.Vm.PageCount];
        _acceptedNow = new bool[os.Vm.PageCount];
        _listed = new bool[os.Vm.PageCount];
    }

    public GuestOperatingSystem Os { get; }
    public BalloonApplication App { get; }
    public GuestVm Vm => Os.Vm;

    /// <summary>Balloon pages the hypervisor holds: reclaimed and not since reused by the guest.</summary>
    public ulong ActualPages
    {
        get
        {
            // The count is kept as this backend takes and gives back pages; only what the guest did to the
            // balloon's process since (paged its pages out, released them, was killed) needs the walk. A
            // walk per read made a boot that inflates in batches quadratic in the balloon's size.
            if (_actual >= 0 && ProcessKey() == _actualKey) return (ulong)_actual;
            // Pages the guest paged out and reused are no longer the balloon's.
            int kept = 0;
            for (int i = 0; i < _reclaimedPages.Count; i++)
            {
                ulong g = _reclaimedPages[i];
                ulong slot = _reclaimedVpn[g];
                if (slot != 0 && (Vm.StateOf(new GuestPage(g)) != GuestPageState.Unbacked || Os.Translate(App.Process, slot - 1)?.Value != g))
                    _reclaimedVpn[g] = slot = 0;
                if (slot != 0) _reclaimedPages[kept++] = g;
                else _listed[g] = false;
            }
            _reclaimedPages.RemoveRange(kept, _reclaimedPages.Count - kept);
            _actual = kept;
            _actualKey = ProcessKey();
            return (ulong)kept;
        }
    }

    private long _actual = -1;
    private (ulong SwappedOut, ulong Releases, bool Killed) _actualKey;
    private (ulong, ulong, bool) ProcessKey() => (App.Process.SwappedOut, App.Process.Releases, App.Process.Killed);

    public long ReclaimedTotal { get; private set; }
    public long RefusedTotal => _refusedTotal.Values.Sum();
    /// <summary>True once the app has failed to make progress towards its target for
    /// <see cref="UnresponsiveAfterSteps"/> steps in a row.</summary>
    public bool Unresponsive => _stepsWithoutProgress >= UnresponsiveAfterSteps;
    public int UnresponsiveAfterSteps { get; init; } = 8;

    /// <summary>Asks the app for up to <paramref name="maxPages"/> pages and reclaims their frames
    /// (translation route). The frames come back Held and all zero.</summary>
    public ReclaimResult Inflate(int maxPages)
    {
        List<BalloonReport> reports = App.Inflate(maxPages);
        ReclaimResult r = Reclaim(reports);
        bool wanted = App.TargetPages > ActualPages;
        _stepsWithoutProgress = wanted && r.Frames.Length == 0 ? _stepsWithoutProgress + 1 : 0;
        return r;
    }

    /// <summary>Verifies reports and reclaims the frames behind the accepted ones.</summary>
    public ReclaimResult Reclaim(IReadOnlyList<BalloonReport> reports)
    {
        var refused = new Dictionary<RefusalReason, int>();
        var accepted = new List<BalloonReport>(reports.Count);
        foreach (BalloonReport report in reports)
        {
            RefusalReason? why = Verify(report);
            if (why is RefusalReason reason)
            {
                refused[reason] = refused.GetValueOrDefault(reason) + 1;
                _refusedTotal[reason] = _refusedTotal.GetValueOrDefault(reason) + 1;
            }
            else
            {
                _acceptedNow[report.ClaimedPage.Value] = true;
                accepted.Add(report);
            }
        }
        foreach (BalloonReport a in accepted) _acceptedNow[a.ClaimedPage.Value] = false;
        return new ReclaimResult(TakeFrames(accepted), refused);
    }

    /// <summary>Content route: scans the VM's backed pages for the agreed value, cross-checks each hit
    /// against the balloon process's page table, and reclaims up to <paramref name="maxPages"/>.</summary>
    public ReclaimResult ReclaimByContent(int maxPages)
    {
        var accepted = new List<BalloonReport>();
        if (App.ShareableValue)
        {
            // The shareable value names no page: walk the balloon process's page table and check each page's
            // bytes, so a page holding the value outside the balloon is never taken.
            for (ulong vpn = 0; vpn < App.Process.VirtualPages && accepted.Count < maxPages; vpn++)
            {
                if (Os.Translate(App.Process, vpn) is not GuestPage g || _reclaimedVpn[g.Value] != 0 || Vm.Translate(g) is not HostFrame f) continue;
                if (BalloonTag.MatchesShared(Vm.Arena.FrameBytes(f), App.VmId)) accepted.Add(new BalloonReport(vpn, g, 0));
            }
            return new ReclaimResult(TakeFrames(accepted), new Dictionary<RefusalReason, int>());
        }
        for (ulong g = 0; g < Vm.PageCount && accepted.Count < maxPages; g++)
        {
            if (_reclaimedVpn[g] != 0 || Vm.Translate(new GuestPage(g)) is not HostFrame f) continue;
            ReadOnlySpan<byte> bytes = Vm.Arena.FrameBytes(f);
            if (!BalloonTag.TryRead(bytes, out int vmId, out ulong vpn, out uint seq) || vmId != App.VmId) continue;
            // A forged tag in another process's page does not translate back to this page.
            if (vpn >= App.Process.VirtualPages || Os.Translate(App.Process, vpn)?.Value != g) continue;
            if (BalloonTag.Matches(bytes, vmId, vpn, seq)) accepted.Add(new BalloonReport(vpn, new GuestPage(g), seq));
        }
        return new ReclaimResult(TakeFrames(accepted), new Dictionary<RefusalReason, int>());
    }

    /// <summary>Lets the app give back up to <paramref name="maxPages"/> pages: each is backed with one
    /// of <paramref name="frames"/> (Held frames, e.g. just reclaimed from another VM) before the guest
    /// reuses it. Returns how many frames were used.</summary>
    public int Deflate(int maxPages, ReadOnlySpan<HostFrame> frames)
    {
        List<ulong> vpns = App.ChooseDeflate(maxPages);
        var needFrame = new List<ulong>(Math.Min(vpns.Count, frames.Length));
        var release = new List<ulong>(vpns.Count);
        foreach (ulong vpn in vpns)
        {
            GuestPage? g = vpn < App.Process.VirtualPages ? Os.Translate(App.Process, vpn) : null;
            bool reclaimed = g is GuestPage p && _reclaimedVpn[p.Value] != 0 && Vm.StateOf(p) == GuestPageState.Unbacked;
            if (!reclaimed) release.Add(vpn);                  // still backed, or paged out: no frame needed
            else if (needFrame.Count < frames.Length)
            {
                needFrame.Add(g!.Value.Value);
                release.Add(vpn);
            }
        }
        SortAscending(needFrame);
        int used = 0;
        foreach ((int at, int length) in Runs(needFrame, i => needFrame[i]))
        {
            Vm.Map(new GuestPage(needFrame[at]), frames.Slice(used, length));
            used += length;
        }
        bool counted = _actual >= 0 && ProcessKey() == _actualKey;
        foreach (ulong page in needFrame) _reclaimedVpn[page] = 0;
        _actual -= needFrame.Count;
        App.Release(release);
        if (counted) _actualKey = ProcessKey();                            // the releases were ours
        else _actual = -1;
        return used;
    }

    private RefusalReason? Verify(BalloonReport report)
    {
        if (report.Vpn >= App.Process.VirtualPages) return RefusalReason.NotItsPage;
        if (Os.Translate(App.Process, report.Vpn) is not GuestPage g) return RefusalReason.NotResident;
        if (g != report.ClaimedPage) return RefusalReason.ClaimMismatch;
        if (_reclaimedVpn[g.Value] != 0 || _acceptedNow[g.Value]) return RefusalReason.Duplicate;
        // A poisoned frame leaves the VM only to be retired, never to another VM: its report recovers it.
        if (Vm.StateOf(g) == GuestPageState.Poisoned) return RefusalReason.Poisoned;
        if (Vm.Translate(g) is not HostFrame f) return RefusalReason.NotBacked;
        // The page may be on a shared frame (the scanner merged it): its bytes are the frame's, read-only.
        ReadOnlySpan<byte> bytes = Vm.Arena.FrameBytes(f);
        if (App.ShareableValue ? !BalloonTag.MatchesShared(bytes, App.VmId) : !BalloonTag.Matches(bytes, App.VmId, report.Vpn, report.Sequence))
            return RefusalReason.ValueMismatch;
        return null;
    }

    // Unmaps accepted pages run by run (one call per run of consecutive guest pages), then zeroes the
    // frames, now out of the guest's reach.
    private HostFrame[] TakeFrames(List<BalloonReport> pages)
    {
        if (pages.Count == 0) return [];
        if (!SortedByPage(pages)) pages.Sort(static (a, b) => a.ClaimedPage.Value.CompareTo(b.ClaimedPage.Value));
        var frames = new HostFrame[pages.Count];
        int taken = 0;
        // Between the check and the unmap a page may have been host-swapped (no frame to take) or
        // poisoned (its frame is retired by the engine, never handed on): such pages are unbacked all the
        // same, and only the frames the unmap gave are moved.
        foreach ((int at, int length) in Runs(pages, i => pages[i].ClaimedPage.Value))
            taken += Vm.Unmap(pages[at].ClaimedPage, (ulong)length, frames.AsSpan(taken));
        frames = frames[..taken];
        Vm.Arena.ZeroInPlace(frames);
        foreach (BalloonReport p in pages)
        {
            ulong g = p.ClaimedPage.Value;
            if (_reclaimedVpn[g] == 0 && _actual >= 0) _actual++;
            _reclaimedVpn[g] = p.Vpn + 1;
            if (!_listed[g]) _reclaimedPages.Add(g);
            _listed[g] = true;
        }
        ReclaimedTotal += frames.Length;
        return frames;
    }

    // Reports and pages usually arrive in order already; sorting them anyway costs more than the check.
    private static bool SortedByPage(List<BalloonReport> reports)
    {
        for (int i = 1; i < reports.Count; i++)
            if (reports[i].ClaimedPage.Value < reports[i - 1].ClaimedPage.Value) return false;
        return true;
    }

    // The balloon gives back its newest pages first, which mostly means descending guest pages.
    private static void SortAscending(List<ulong> pages)
    {
        bool ascending = true, descending = true;
        for (int i = 1; i < pages.Count && (ascending || descending); i++)
        {
            ascending &= pages[i] > pages[i - 1];
            descending &= pages[i] < pages[i - 1];
        }
        if (descending) pages.Reverse();
        else if (!ascending) pages.Sort();
    }

    // Runs of consecutive values in a sorted sequence, as (index of first, length).
    private static IEnumerable<(int At, int Length)> Runs<T>(List<T> sorted, Func<int, ulong> key)
    {
        int i = 0;
        while (i < sorted.Count)
        {
            int j = i + 1;
            while (j < sorted.Count && key(j) == key(i) + (ulong)(j - i)) j++;
            yield return (i, j - i);
            i = j;
        }
    }
}
