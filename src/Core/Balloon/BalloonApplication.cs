// The balloon application: an ordinary guest process that, on the scheduler's allocation parameters,
// reserves guest virtual pages and writes the agreed value into each, releases them to deflate,
// touches them to notice guest page-outs, and backs off when its guest cannot give memory.
using PageLab.Core.GuestOs;

namespace PageLab.Core.Balloon;

/// <summary>What the balloon application tells the hypervisor about one page it reserved.</summary>
/// <param name="Vpn">The virtual page in the balloon process.</param>
/// <param name="ClaimedPage">The guest physical page the guest says backs it.</param>
/// <param name="Sequence">The sequence number written into the page's value.</param>
public readonly record struct BalloonReport(ulong Vpn, GuestPage ClaimedPage, uint Sequence);

/// <summary>How a balloon application behaves; everything but Honest is for testing a hostile guest.</summary>
public enum BalloonBehaviour { Honest, StopsResponding, NeverWritesValue, ReportsTwice, ReportsForeignPages }

public sealed class BalloonApplication
{
    private readonly GuestOperatingSystem _os;
    // The reserved set, kept in arrays because inflation touches it once per page moved: the sequence
    // written into each reserved vpn (0 = not reserved), and the reserved vpns in order of reservation
    // with each one's index in that list (for removal by swapping with the last).
    private readonly uint[] _sequenceOf;
    private readonly List<ulong> _reserved = new();
    private readonly int[] _indexOf;
    private readonly Stack<ulong> _freeVpns = new();
    private uint _sequence;
    private int _backoffTicks;

    /// <param name="shareableValue">Write the VM's shareable value (<see cref="BalloonTag.WriteShared"/>), one word
    /// over the whole page, instead of the per-page tag: for a VM that opted in to page sharing.</param>
    public BalloonApplication(GuestOperatingSystem os, int vmId, BalloonBehaviour behaviour = BalloonBehaviour.Honest, bool shareableValue = false)
    {
        ShareableValue = shareableValue;
        _os = os;
        VmId = vmId;
        Behaviour = behaviour;
        Process = os.Spawn("balloon", os.Vm.PageCount, balloon: true);
        _sequenceOf = new uint[os.Vm.PageCount];
        _indexOf = new int[os.Vm.PageCount];
        for (ulong v = os.Vm.PageCount; v-- > 0;) _freeVpns.Push(v);
        os.SeverePressure = DeflateOnOom;
    }

    public int VmId { get; }
    /// <summary>True: pages hold the VM's shareable value (one word over the whole page), not a per-page tag.</summary>
    public bool ShareableValue { get; }
    public BalloonBehaviour Behaviour { get; set; }
    public GuestProcess Process { get; }
    /// <summary>Pages the scheduler asked for (the allocation parameter).</summary>
    public ulong TargetPages { get; private set; }
    public ulong ReservedPages => (ulong)_reserved.Count;
    /// <summary>Balloon pages the guest OS paged out, noticed by the periodic touch.</summary>
    public ulong PageOutsSeen { get; private set; }
    public ulong DeflatedOnOom { get; private set; }
    public ulong BackOffs { get; private set; }
    public bool BackingOff => _backoffTicks > 0;

    public void SetTarget(ulong pages)
    {
        if (pages > _os.Vm.PageCount)
            throw new ArgumentOutOfRangeException(nameof(pages), pages, $"balloon target passes the VM's {_os.Vm.PageCount} pages");
        TargetPages = pages;
    }

    /// <summary>Reserves up to <paramref name="maxPages"/> more pages towards the target, writes the value
    /// into each and returns the reports. Returns nothing while backing off or not responding.</summary>
    public List<BalloonReport> Inflate(int maxPages)
    {
        var reports = new List<BalloonReport>(Math.Clamp(maxPages, 0, 4096));
        if (Behaviour == BalloonBehaviour.StopsResponding) return reports;
        if (_backoffTicks > 0) { _backoffTicks--; return reports; }
        ulong swapOutsBefore = _os.Stats.SwapOuts;
        while (reports.Count < maxPages && ReservedPages < TargetPages && _freeVpns.Count > 0)
        {
            ulong vpn = _freeVpns.Pop();
            ulong g;
            try { g = _os.EnsureResident(Process, vpn); }
            catch (GuestProcessKilledException) { return reports; }
            Span<byte> page = _os.Vm.Page(new GuestPage(g));
            if (++_sequence == 0) _sequence = 1;              // 0 means "not reserved"
            uint seq = _sequence;
            if (Behaviour != BalloonBehaviour.NeverWritesValue)
            {
                if (ShareableValue) BalloonTag.WriteShared(page, VmId);
                else BalloonTag.Write(page, VmId, vpn, seq);
            }
            Reserve(vpn, seq);
            var claimed = new GuestPage(g);
            if (Behaviour == BalloonBehaviour.ReportsForeignPages) claimed = ForeignPage() ?? claimed;
            reports.Add(new BalloonReport(vpn, claimed, seq));
            if (Behaviour == BalloonBehaviour.ReportsTwice) reports.Add(new BalloonReport(vpn, claimed, seq));
        }
        // Out of puff: reserving made the guest page out more than a batch worth; let it settle.
        if (_os.Stats.SwapOuts - swapOutsBefore > (ulong)Math.Max(maxPages, 1) * 2)
        {
            _backoffTicks = 4;
            BackOffs++;
        }
        return reports;
    }

    /// <summary>Picks up to <paramref name="maxPages"/> reserved pages to give back (deflate). The
    /// hypervisor backs them, then calls <see cref="Release"/>.</summary>
    public List<ulong> ChooseDeflate(int maxPages)
    {
        if (Behaviour == BalloonBehaviour.StopsResponding) return [];
        ulong excess = ReservedPages > TargetPages ? ReservedPages - TargetPages : 0;
        return Newest((int)Math.Min((ulong)maxPages, excess));
    }

    public void Release(IEnumerable<ulong> vpns)
    {
        foreach (ulong vpn in vpns)
        {
            if (vpn >= (ulong)_sequenceOf.Length || _sequenceOf[vpn] == 0) continue;
            Unreserve(vpn);
            Process.Release(vpn);
            _freeVpns.Push(vpn);
        }
    }

    private void Reserve(ulong vpn, uint seq)
    {
        _sequenceOf[vpn] = seq;
        _indexOf[vpn] = _reserved.Count;
        _reserved.Add(vpn);
    }

    private void Unreserve(ulong vpn)
    {
        int i = _indexOf[vpn];
        ulong last = _reserved[^1];
        _reserved[i] = last;
        _indexOf[last] = i;
        _reserved.RemoveAt(_reserved.Count - 1);
        _sequenceOf[vpn] = 0;
    }

    // The most recently reserved pages, newest first: they give back the pages reserved last.
    private List<ulong> Newest(int n)
    {
        var vpns = new List<ulong>(n);
        for (int i = _reserved.Count - 1; i >= 0 && vpns.Count < n; i--) vpns.Add(_reserved[i]);
        return vpns;
    }

    /// <summary>The periodic touch: keeps resident balloon pages warm and forgets pages the guest paged
    /// out (freeing their swap slots), so they are re-reserved by later inflation. Returns page-outs seen.</summary>
    public int TouchAll()
    {
        if (Behaviour == BalloonBehaviour.StopsResponding) return 0;
        var lost = new List<ulong>();
        foreach (ulong vpn in _reserved)
            if (!Process.Touch(vpn)) lost.Add(vpn);
        Release(lost);
        PageOutsSeen += (ulong)lost.Count;
        return lost.Count;
    }

    // Deflate-on-OOM: the guest is out of pages; give back what it asks for without the hypervisor.
    private ulong DeflateOnOom(ulong wanted)
    {
        List<ulong> give = Newest((int)Math.Min(wanted, (ulong)_reserved.Count));
        Release(give);
        DeflatedOnOom += (ulong)give.Count;
        return (ulong)give.Count;
    }

    private GuestPage? ForeignPage()
    {
        foreach (GuestProcess p in _os.Processes)
            if (p != Process)
                for (ulong v = 0; v < p.VirtualPages; v++)
                    if (_os.Translate(p, v) is GuestPage g) return g;
        return null;
    }
}
