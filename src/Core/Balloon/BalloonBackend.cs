// The hypervisor side of ballooning for one VM: identifies the host frames behind balloon pages (by
// translation of the app's reports, or by scanning content), verifies the agreed value before a frame
// leaves the VM, reclaims frames, and backs pages the balloon gives back. Nothing the guest says is trusted.
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;

namespace PageLab.Core.Balloon;

/// <summary>Why a balloon report was refused.</summary>
public enum RefusalReason { NotItsPage, NotResident, ClaimMismatch, Duplicate, NotBacked, ValueMismatch }

/// <summary>What one reclaim step did: frames taken (Held, scrubbed) and reports refused by reason.</summary>
public sealed record ReclaimResult(HostFrame[] Frames, IReadOnlyDictionary<RefusalReason, int> Refused)
{
    public int RefusedCount => Refused.Values.Sum();
}

public sealed class BalloonBackend
{
    private readonly Dictionary<ulong, ulong> _reclaimed = new(); // guest page -> balloon vpn, frame given up
    private readonly Dictionary<RefusalReason, long> _refusedTotal = new();
    private int _stepsWithoutProgress;

    public BalloonBackend(GuestOperatingSystem os, BalloonApplication app)
    {
        Os = os;
        App = app;
    }

    public GuestOperatingSystem Os { get; }
    public BalloonApplication App { get; }
    public GuestVm Vm => Os.Vm;

    /// <summary>Balloon pages the hypervisor holds: reclaimed and not since reused by the guest.</summary>
    public ulong ActualPages
    {
        get
        {
            // Pages the guest paged out and reused are no longer the balloon's.
            foreach ((ulong g, ulong vpn) in _reclaimed.ToList())
                if (Vm.StateOf(new GuestPage(g)) != GuestPageState.Unbacked || Os.Translate(App.Process, vpn)?.Value != g)
                    _reclaimed.Remove(g);
            return (ulong)_reclaimed.Count;
        }
    }

    public long ReclaimedTotal { get; private set; }
    public long RefusedTotal => _refusedTotal.Values.Sum();
    public IReadOnlyDictionary<RefusalReason, long> RefusedByReason => _refusedTotal;

    /// <summary>True once the app has failed to make progress towards its target for
    /// <see cref="UnresponsiveAfterSteps"/> steps in a row.</summary>
    public bool Unresponsive => _stepsWithoutProgress >= UnresponsiveAfterSteps;
    public int UnresponsiveAfterSteps { get; init; } = 8;

    /// <summary>Asks the app for up to <paramref name="maxPages"/> pages and reclaims their frames
    /// (translation route). The frames come back Held and scrubbed.</summary>
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
        var accepted = new SortedDictionary<ulong, ulong>();
        foreach (BalloonReport report in reports)
        {
            RefusalReason? why = Verify(report, accepted);
            if (why is RefusalReason reason)
            {
                refused[reason] = refused.GetValueOrDefault(reason) + 1;
                _refusedTotal[reason] = _refusedTotal.GetValueOrDefault(reason) + 1;
            }
            else accepted.Add(report.ClaimedPage.Value, report.Vpn);
        }
        return new ReclaimResult(TakeFrames(accepted), refused);
    }

    /// <summary>Content route: scans the VM's backed pages for the agreed value, cross-checks each hit
    /// against the balloon process's page table, and reclaims up to <paramref name="maxPages"/>.</summary>
    public ReclaimResult ReclaimByContent(int maxPages)
    {
        var accepted = new SortedDictionary<ulong, ulong>();
        for (ulong g = 0; g < Vm.PageCount && accepted.Count < maxPages; g++)
        {
            if (_reclaimed.ContainsKey(g) || Vm.Translate(new GuestPage(g)) is not HostFrame f) continue;
            ReadOnlySpan<byte> bytes = Vm.Arena.FrameBytes(f);
            if (!BalloonTag.TryRead(bytes, out int vmId, out ulong vpn, out uint seq) || vmId != App.VmId) continue;
            // A forged tag in another process's page does not translate back to this page.
            if (vpn >= App.Process.VirtualPages || Os.Translate(App.Process, vpn)?.Value != g) continue;
            if (BalloonTag.Matches(bytes, vmId, vpn, seq)) accepted.Add(g, vpn);
        }
        return new ReclaimResult(TakeFrames(accepted), new Dictionary<RefusalReason, int>());
    }

    /// <summary>Lets the app give back up to <paramref name="maxPages"/> pages: each is backed with one
    /// of <paramref name="frames"/> (Held frames, e.g. just reclaimed from another VM) before the guest
    /// reuses it. Returns how many frames were used.</summary>
    public int Deflate(int maxPages, ReadOnlySpan<HostFrame> frames)
    {
        List<ulong> vpns = App.ChooseDeflate(maxPages);
        var needFrame = new List<ulong>();
        var release = new List<ulong>();
        foreach (ulong vpn in vpns)
        {
            GuestPage? g = vpn < App.Process.VirtualPages ? Os.Translate(App.Process, vpn) : null;
            bool reclaimed = g is GuestPage p && _reclaimed.ContainsKey(p.Value) && Vm.StateOf(p) == GuestPageState.Unbacked;
            if (!reclaimed) release.Add(vpn);                  // still backed, or paged out: no frame needed
            else if (needFrame.Count < frames.Length)
            {
                needFrame.Add(g!.Value.Value);
                release.Add(vpn);
            }
        }
        needFrame.Sort();
        int used = 0;
        foreach ((ulong start, int length) in Runs(needFrame))
        {
            Vm.Map(new GuestPage(start), frames.Slice(used, length));
            used += length;
        }
        foreach (ulong page in needFrame) _reclaimed.Remove(page);
        App.Release(release);
        return used;
    }

    private RefusalReason? Verify(BalloonReport report, SortedDictionary<ulong, ulong> acceptedNow)
    {
        if (report.Vpn >= App.Process.VirtualPages) return RefusalReason.NotItsPage;
        if (Os.Translate(App.Process, report.Vpn) is not GuestPage g) return RefusalReason.NotResident;
        if (g != report.ClaimedPage) return RefusalReason.ClaimMismatch;
        if (_reclaimed.ContainsKey(g.Value) || acceptedNow.ContainsKey(g.Value)) return RefusalReason.Duplicate;
        if (Vm.Translate(g) is not HostFrame f) return RefusalReason.NotBacked;
        if (!BalloonTag.Matches(Vm.Arena.FrameBytes(f), App.VmId, report.Vpn, report.Sequence)) return RefusalReason.ValueMismatch;
        return null;
    }

    // Unmaps accepted pages run by run (one call per run of consecutive guest pages) and scrubs the
    // frames, so whatever the guest left in them never reaches another VM.
    private HostFrame[] TakeFrames(SortedDictionary<ulong, ulong> pages)
    {
        var frames = new List<HostFrame>();
        foreach ((ulong start, int length) in Runs(pages.Keys.ToList()))
            frames.AddRange(Vm.Unmap(new GuestPage(start), (ulong)length));
        HostFrame[] all = frames.ToArray();
        if (all.Length > 0) Vm.Arena.Scrub(all);
        foreach ((ulong g, ulong vpn) in pages) _reclaimed[g] = vpn;
        ReclaimedTotal += all.Length;
        return all;
    }

    private static IEnumerable<(ulong Start, int Length)> Runs(List<ulong> sorted)
    {
        int i = 0;
        while (i < sorted.Count)
        {
            int j = i + 1;
            while (j < sorted.Count && sorted[j] == sorted[i] + (ulong)(j - i)) j++;
            yield return (sorted[i], j - i);
            i = j;
        }
    }
}
