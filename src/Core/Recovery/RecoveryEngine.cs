// Transparent recovery from memory errors for one VM: protects pages by policy (parity groups over a
// hidden parity frame, or a recorded disk copy), re-covers written pages in the background, and handles
// reported errors: rebuild into a fresh frame and retire the bad one, or contain an unprotected error
// to the guest context that uses the page. The rebuild itself runs in the fault engine (C).
using System.Diagnostics;
using PageLab.Core.Guest;
using PageLab.Core.Host;

namespace PageLab.Core.Recovery;

public enum ErrorOutcome
{
    /// <summary>A guest page was rebuilt bit-exact (from parity or disk) and remapped.</summary>
    Recovered,
    /// <summary>A parity frame was rebuilt from its group.</summary>
    ParityRebuilt,
    /// <summary>The error was in a free frame; it was retired, nothing was lost.</summary>
    FreeFrameRetired,
    /// <summary>An unprotected page: its guest context was told and terminated; the rest runs on.</summary>
    Contained,
}

public sealed record ErrorReport(HostFrame Frame, ErrorOutcome Outcome, GuestPage? Page, TimeSpan Latency);

public sealed class RecoveryEngine
{
    private readonly Dictionary<uint, int> _groupOfParity = new();   // parity frame -> group
    private readonly List<GuestPage> _grouped = new();
    private readonly List<Aging> _aging = new();          // per grouped page, same order
    private readonly HashSet<uint> _retired = new();

    public RecoveryEngine(GuestVm vm, ProtectionPolicy? policy = null)
    {
        Vm = vm;
        Policy = policy ?? new ProtectionPolicy();
        Policy.Validate();
    }

    public GuestVm Vm { get; }
    public ProtectionPolicy Policy { get; }
    public HostArena Arena => Vm.Arena;
    public int Groups => _groupOfParity.Count;
    public IReadOnlyCollection<uint> RetiredFrames => _retired;
    /// <summary>Each group's parity frame (for checks that recompute parity from scratch).</summary>
    public IReadOnlyDictionary<uint, int> ParityFrames => _groupOfParity;
    /// <summary>The pages of each group, in order of creation.</summary>
    public IReadOnlyList<GuestPage> GroupedPages => _grouped;

    /// <summary>Called for an uncorrectable error on an unprotected page, before the page is taken
    /// away: the guest terminates the context using it. Returns a description of what was terminated.</summary>
    public Func<GuestPage, string>? Unrecoverable { get; set; }

    /// <summary>The file that disk offsets refer to (e.g. the guest's swap file), as an open fd.</summary>
    public void UseDiskFile(int fd) => Vm.SetDiskFile(fd);

    /// <summary>Protects backed pages of one category as the policy says. Parity pages are grouped k at a
    /// time, each group with a fresh Parity frame; disk pages need their copy's offset.</summary>
    public int Protect(IReadOnlyList<GuestPage> pages, PageCategory category, Func<GuestPage, long>? diskOffset = null)
    {
        switch (Policy.For(category))
        {
            case Protection.Parity:
                for (int i = 0; i < pages.Count; i += Policy.GroupSize)
                {
                    GuestPage[] members = pages.Skip(i).Take(Policy.GroupSize).ToArray();
                    if (members.Length < 2) break;   // a lone page gains nothing from parity
                    HostFrame parity = Arena.Allocate(1)[0];
                    Arena.Transition([parity], FrameState.Held, null, FrameState.Parity, 0);
                    int group = Vm.CreateParityGroup(members, parity);
                    _groupOfParity[parity.Value] = group;
                    _grouped.AddRange(members);
                    _aging.AddRange(members.Select(_ => new Aging { Wait = 1 }));
                }
                return Vm.Protect(pages.ToArray(), []);
            case Protection.DiskCopy:
                if (diskOffset is null) throw new ArgumentNullException(nameof(diskOffset), $"{category} pages are protected by their disk copy; give its offsets");
                return Vm.Protect(pages.ToArray(), pages.Select(diskOffset).ToArray());
            default:
                return 0;
        }
    }

    /// <summary>The background protector: re-covers grouped pages that writes left unprotected. With
    /// <paramref name="coldOnly"/>, a page is re-covered only once it has stayed unprotected for as many
    /// passes as it has earned: a page written again right after being re-covered is hot and waits twice
    /// as long next time (up to <see cref="MaxColdPasses"/>); one that stays covered for a pass waits half
    /// as long. Hot pages then cost no write faults, and cold ones are protected after one pass.
    /// Returns how many pages were re-covered.</summary>
    public int Reprotect(bool coldOnly = true)
    {
        var recover = new List<GuestPage>();
        for (int i = 0; i < _grouped.Count; i++)
        {
            ref Aging a = ref System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_aging)[i];
            if (Vm.StateOf(_grouped[i]) != GuestPageState.Backed)
            {
                if (a.CoveredLastPass) a.Wait = Math.Max(1, a.Wait / 2);
                a.CoveredLastPass = true;
                a.RecoveredLastPass = false;
                continue;
            }
            if (a.CoveredLastPass && a.RecoveredLastPass) a.Wait = Math.Min(MaxColdPasses, a.Wait * 2);
            a.CoveredLastPass = a.RecoveredLastPass = false;
            if (++a.UncoveredPasses < a.Wait && coldOnly) continue;
            recover.Add(_grouped[i]);
            a.UncoveredPasses = 0;
            a.CoveredLastPass = a.RecoveredLastPass = true;
        }
        return recover.Count == 0 ? 0 : Vm.Protect(recover.ToArray(), []);
    }

    /// <summary>The longest a hot page waits, in protector passes, before it is re-covered.</summary>
    public const int MaxColdPasses = 64;

    private struct Aging
    {
        public int Wait;             // passes a page must stay unprotected before it is re-covered
        public int UncoveredPasses;
        public bool CoveredLastPass, RecoveredLastPass;
    }

    /// <summary>Handles an uncorrected error reported for a frame (as a machine check would report a
    /// physical address). The guest never sees the bad bytes of a protected page.</summary>
    public ErrorReport Report(HostFrame frame)
    {
        var clock = Stopwatch.StartNew();
        RetireHandlerReplaced();
        FrameState state = Arena.StateOf(frame);
        ErrorOutcome outcome;
        GuestPage? page = null;
        switch (state)
        {
            case FrameState.Free:
                Arena.Retire(frame);
                _retired.Add(frame.Value);
                outcome = ErrorOutcome.FreeFrameRetired;
                break;
            case FrameState.Parity:
            {
                HostFrame fresh = FreshParity();
                int group = _groupOfParity[frame.Value];
                HostFrame old = Vm.RebuildParity(group, fresh);
                _groupOfParity.Remove(old.Value);
                _groupOfParity[fresh.Value] = group;
                RetireParity(old);
                outcome = ErrorOutcome.ParityRebuilt;
                break;
            }
            case FrameState.Retired:
                outcome = ErrorOutcome.Recovered;    // the handler already replaced it on a guest access
                break;
            case FrameState.Guest when Arena.OwnerOf(frame) == Vm.Id:
                page = PageOf(frame);
                if (page is null)
                {
                    // A guest access had the handler replace it between our look-ups; collect it.
                    RetireHandlerReplaced();
                    if (Arena.StateOf(frame) != FrameState.Retired)
                        throw new InvalidOperationException($"{frame} belongs to {Vm.Name} but backs none of its pages (a pool frame)");
                    outcome = ErrorOutcome.Recovered;
                    break;
                }
                outcome = RecoverPage(page.Value, frame);
                break;
            default:
                throw new InvalidOperationException($"{frame} is {state}; this engine handles {Vm.Name}'s frames, parity and free frames");
        }
        return new ErrorReport(frame, outcome, page, clock.Elapsed);
    }

    /// <summary>The scrubber: finds protected pages and parity frames that changed without a report
    /// (silent corruption) and repairs them. Returns what it repaired.</summary>
    public List<ErrorReport> Scrub()
    {
        var repaired = new List<ErrorReport>();
        foreach (GuestPage g in Vm.ScrubPages(new GuestPage(0), Vm.PageCount))
        {
            HostFrame bad = Vm.Translate(g)!.Value;
            repaired.Add(new ErrorReport(bad, RecoverPage(g, bad), g, TimeSpan.Zero));
        }
        foreach (int group in Vm.ScrubParity())
        {
            uint parity = _groupOfParity.First(kv => kv.Value == group).Key;
            repaired.Add(Report(new HostFrame(parity)));
        }
        return repaired;
    }

    private ErrorOutcome RecoverPage(GuestPage page, HostFrame bad)
    {
        HostFrame fresh = Arena.Allocate(1)[0];
        switch (Vm.Recover(page, bad, fresh))
        {
            case RecoverResult.Recovered:
                Retire(bad);
                return ErrorOutcome.Recovered;
            case RecoverResult.AlreadyReplaced:
                Arena.Release([fresh]);
                RetireHandlerReplaced();
                return ErrorOutcome.Recovered;
        }
        // No good copy: contain the error to the guest context using the page, then take the page away.
        Arena.Release([fresh]);
        Unrecoverable?.Invoke(page);
        foreach (HostFrame f in Vm.Unmap(page, 1)) Retire(f);
        return ErrorOutcome.Contained;
    }

    /// <summary>Retires the bad frames the fault handler replaced on guest accesses since the last call.</summary>
    public void RetireHandlerReplaced()
    {
        foreach (HostFrame f in Vm.TakeHandlerRetired()) Retire(f);
    }

    private void Retire(HostFrame f)
    {
        Arena.Retire(f);
        _retired.Add(f.Value);
    }

    private HostFrame FreshParity()
    {
        HostFrame fresh = Arena.Allocate(1)[0];
        Arena.Transition([fresh], FrameState.Held, null, FrameState.Parity, 0);
        return fresh;
    }

    private void RetireParity(HostFrame old)
    {
        Arena.Transition([old], FrameState.Parity, null, FrameState.Held, 0);
        Retire(old);
    }

    private GuestPage? PageOf(HostFrame frame)
    {
        for (ulong g = 0; g < Vm.PageCount; g++)
            if (Vm.Translate(new GuestPage(g)) == frame) return new GuestPage(g);
        return null;
    }
}
