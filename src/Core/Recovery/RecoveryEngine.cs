// Transparent recovery from memory errors for one VM: protects pages by policy (parity groups over a
// hidden parity frame, or a recorded disk copy), re-covers written pages in the background, and handles
// reported errors: rebuild into a fresh frame and retire the bad one, or contain an unprotected error
// to the guest context that uses the page. The rebuild itself runs in the fault engine (C), which also
// recovers or contains pages a guest touches before their report; this engine hears of those as events.
// Every public call is serialised on one lock; a VM disposed meanwhile makes them throw ObjectDisposedException.
using System.Diagnostics;
using Microsoft.Win32.SafeHandles;
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

public sealed class RecoveryEngine : IDisposable
{
    private readonly Dictionary<uint, int> _groupOfParity = new();   // parity frame -> group
    private readonly List<GuestPage> _grouped = new();
    private readonly List<Aging> _aging = new();          // per grouped page, same order
    private readonly HashSet<uint> _retired = new();
    private readonly Dictionary<uint, ErrorOutcome> _handled = new(); // bad frame -> how it ended
    private readonly Lock _sync = new();
    private bool _disposed;

    public RecoveryEngine(GuestVm vm, ProtectionPolicy? policy = null)
    {
        Vm = vm;
        Policy = policy ?? new ProtectionPolicy();
        Policy.Validate();
    }

    public GuestVm Vm { get; }
    public ProtectionPolicy Policy { get; }
    public HostArena Arena => Vm.Arena;
    public int Groups { get { lock (_sync) return _groupOfParity.Count; } }
    public IReadOnlyCollection<uint> RetiredFrames { get { lock (_sync) return _retired.ToArray(); } }
    /// <summary>Each group's parity frame (for checks that recompute parity from scratch).</summary>
    public IReadOnlyDictionary<uint, int> ParityFrames { get { lock (_sync) return new Dictionary<uint, int>(_groupOfParity); } }

    /// <summary>Called for an uncorrectable error on an unprotected page (or a protected one with no good
    /// copy): the guest terminates the context using it. Returns a description of what was terminated.</summary>
    public Func<GuestPage, string>? Unrecoverable { get; set; }

    /// <summary>The file that disk offsets refer to (e.g. the guest's swap file). The VM keeps it open for
    /// as long as the engine may read it.</summary>
    public void UseDiskFile(SafeFileHandle file)
    {
        ArgumentNullException.ThrowIfNull(file);
        lock (_sync) Vm.SetDiskFile(file);
    }

    /// <summary>Protects backed pages of one category as the policy says. Parity pages are grouped k at a
    /// time, each group with a fresh Parity frame; disk pages need their copy's offset.</summary>
    public int Protect(IReadOnlyList<GuestPage> pages, PageCategory category, Func<GuestPage, long>? diskOffset = null)
    {
        lock (_sync)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            switch (Policy.For(category))
            {
                case Protection.Parity:
                    for (int i = 0; i < pages.Count; i += Policy.GroupSize)
                    {
                        GuestPage[] members = pages.Skip(i).Take(Policy.GroupSize).ToArray();
                        if (members.Length < 2) break;   // a lone page gains nothing from parity
                        HostFrame parity = FreshParity();
                        int group;
                        try { group = Vm.CreateParityGroup(members, parity); }
                        catch
                        {
                            FreeParity(parity);
                            throw;
                        }
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
    }

    /// <summary>The background protector: re-covers grouped pages that writes left unprotected. With
    /// <paramref name="coldOnly"/>, a page is re-covered only once it has stayed unprotected for as many
    /// passes as it has earned: a page written again right after being re-covered is hot and waits twice
    /// as long next time (up to <see cref="MaxColdPasses"/>); one that stays covered for a pass waits half
    /// as long. Hot pages then cost no write faults, and cold ones are protected after one pass.
    /// Returns how many pages were re-covered.</summary>
    public int Reprotect(bool coldOnly = true)
    {
        lock (_sync)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
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
    /// physical address). The guest never sees the bad bytes of a protected page. Throws for a frame that
    /// is not this VM's, one of its parity frames, or free (route those with <see cref="ErrorRouter"/>).</summary>
    public ErrorReport Report(HostFrame frame)
    {
        var clock = Stopwatch.StartNew();
        lock (_sync)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            DrainHandlerEvents();
            (ErrorOutcome outcome, GuestPage? page) = ReportLocked(frame);
            return new ErrorReport(frame, outcome, page, clock.Elapsed);
        }
    }

    private (ErrorOutcome, GuestPage?) ReportLocked(HostFrame frame, int attempt = 0)
    {
        // A frame in flux (a fault is moving it this instant) is looked at again; it settles in microseconds.
        if (attempt > 1000) throw new InvalidOperationException($"{frame} of {Vm.Name} did not settle in any state");
        FrameState state = Arena.StateOf(frame);
        switch (state)
        {
            case FrameState.Free:
                if (!Arena.TryRetireFree(frame)) return ReportLocked(frame, attempt + 1); // taken meanwhile: follow it
                _retired.Add(frame.Value);
                return (ErrorOutcome.FreeFrameRetired, null);
            case FrameState.Parity when _groupOfParity.TryGetValue(frame.Value, out int group):
                RebuildParityLocked(frame, group);
                return (ErrorOutcome.ParityRebuilt, null);
            case FrameState.Shared:
            {
                // Shared by pages of this and maybe other VMs: every sharer is contained (or, for a zero
                // page, unbacked with nothing lost) and the frame retired; each VM hears through its events.
                if (Arena.ReportShared(frame) is not var (_, lost)) return ReportLocked(frame, attempt + 1);
                DrainHandlerEvents();
                _handled[frame.Value] = lost ? ErrorOutcome.Contained : ErrorOutcome.Recovered;
                return (_handled[frame.Value], null);
            }
            case FrameState.Retired:
                // The handler (or an earlier report) already dealt with it.
                return (_handled.GetValueOrDefault(frame.Value, ErrorOutcome.Recovered), null);
            case FrameState.Guest when Arena.OwnerOf(frame) == Vm.Id:
                if (PageOf(frame) is not GuestPage page)
                {
                    DrainHandlerEvents();
                    if (Arena.StateOf(frame) == FrameState.Retired) return ReportLocked(frame, attempt + 1);
                    // A frame in the demand pool (or reused by host swap this instant): the pool is
                    // emptied, the bad frame retired and the rest given back.
                    if (Vm.RetireFromPool(frame)) { _retired.Add(frame.Value); return (ErrorOutcome.FreeFrameRetired, null); }
                    Thread.Yield();
                    return ReportLocked(frame, attempt + 1);
                }
                return (RecoverPage(page, frame), page);
            default:
                // The handler may have moved it since it was read (recovered and retired it, say).
                if (Arena.StateOf(frame) != state || (state == FrameState.Guest && Arena.OwnerOf(frame) is null))
                    return ReportLocked(frame, attempt + 1);
                throw new InvalidOperationException(
                    $"{frame} is {state}{(Arena.OwnerOf(frame) is int o ? $" of VM {o}" : "")}; this engine handles {Vm.Name}'s frames, its parity frames and free frames");
        }
    }

    private void RebuildParityLocked(HostFrame bad, int group)
    {
        HostFrame fresh = FreshParity();
        HostFrame? old = Vm.RebuildParity(group, fresh);
        if (old is null)
        {
            // A member is poisoned or corrupt too: recover (or contain) it first, with the parity as it
            // is, then rebuild from the members.
            foreach (GuestPage g in Vm.ScrubPages(new GuestPage(0), Vm.PageCount))
                if (Vm.Translate(g) is HostFrame f) RecoverPage(g, f);
            old = Vm.RebuildParity(group, fresh);
        }
        if (old is null)
        {
            FreeParity(fresh);
            throw new InvalidOperationException($"{Vm.Name}: parity group {group} still has an untrustworthy member after recovery");
        }
        _groupOfParity.Remove(old.Value.Value);
        _groupOfParity[fresh.Value] = group;
        Arena.Transition([old.Value], FrameState.Parity, FrameState.Held);
        Retire(old.Value);
        _handled[bad.Value] = ErrorOutcome.ParityRebuilt;
    }

    /// <summary>The scrubber: finds poisoned pages, protected pages and parity frames that changed without
    /// a report (silent corruption) and repairs them; pages first, since a group's parity is judged only
    /// once its members are sound. Returns what it repaired.</summary>
    public List<ErrorReport> Scrub()
    {
        lock (_sync)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            DrainHandlerEvents();
            var repaired = new List<ErrorReport>();
            foreach (GuestPage g in Vm.ScrubPages(new GuestPage(0), Vm.PageCount))
                if (Vm.Translate(g) is HostFrame bad)
                    repaired.Add(new ErrorReport(bad, RecoverPage(g, bad), g, TimeSpan.Zero));
            foreach (int group in Vm.ScrubParity())
            {
                uint parity = _groupOfParity.First(kv => kv.Value == group).Key;
                RebuildParityLocked(new HostFrame(parity), group);
                repaired.Add(new ErrorReport(new HostFrame(parity), ErrorOutcome.ParityRebuilt, null, TimeSpan.Zero));
            }
            return repaired;
        }
    }

    private ErrorOutcome RecoverPage(GuestPage page, HostFrame bad)
    {
        // With no free frame the engine finds one itself (pool, or a host-swapped page's).
        HostFrame? fresh = Arena.Counts.Free > 0 ? TryAllocate() : null;
        RecoverResult result;
        try { result = Vm.Recover(page, bad, fresh); }
        catch
        {
            if (fresh is HostFrame f) Arena.ReleaseOrZero([f]);
            throw;
        }
        if (result != RecoverResult.Recovered && fresh is HostFrame unused) Arena.ReleaseOrZero([unused]);
        switch (result)
        {
            case RecoverResult.Recovered:
                _retired.Add(bad.Value);
                _handled[bad.Value] = ErrorOutcome.Recovered;
                return ErrorOutcome.Recovered;
            case RecoverResult.AlreadyReplaced:
                DrainHandlerEvents();
                return _handled.GetValueOrDefault(bad.Value, ErrorOutcome.Recovered);
        }
        // No good copy: contain the error to the guest context using the page, then take the page away
        // (the engine retires a poisoned frame itself; a silently corrupt one comes back Held).
        _handled[bad.Value] = ErrorOutcome.Contained;
        Unrecoverable?.Invoke(page);
        foreach (HostFrame f in Vm.Unmap(page, 1)) Retire(f);
        _retired.Add(bad.Value);
        DrainHandlerEvents(); // the unmap's own event for this frame, already handled above
        return ErrorOutcome.Contained;
    }

    /// <summary>Collects what the fault handler did on guest accesses since the last call: recovered pages
    /// are counted; contained ones end their guest context (<see cref="Unrecoverable"/>); the kernel's
    /// deferred reports (action optional) are handled as reports of their frames.</summary>
    public void CollectHandlerEvents()
    {
        lock (_sync)
        {
            if (_disposed || Vm.IsDisposed) return;
            DrainHandlerEvents();
        }
    }

    private void DrainHandlerEvents()
    {
        List<HandlerEvent>? reported = null;
        bool otherSharers = false;
        foreach (HandlerEvent e in Vm.TakeHandlerEvents())
        {
            if (e.Reported)
            {
                // The kernel reported the page bad (action optional): handled below, as a report of its frame.
                (reported ??= []).Add(e);
                continue;
            }
            if (e.MapLimit)
            {
                // No bad frame: the page was given up at the mapping budget (vm.max_map_count). Its context ends.
                Unrecoverable?.Invoke(e.Page);
                continue;
            }
            _retired.Add(e.BadFrame.Value);
            if (e.SharedFrame)
            {
                // One event per sharer page of a bad shared frame: each page's context ends. A guest write
                // found the error (the frame failed its hash on the copy): the other sharers, in any VM,
                // are contained now too, and the frame retired.
                _handled.TryAdd(e.BadFrame.Value, ErrorOutcome.Contained);
                Unrecoverable?.Invoke(e.Page);
                if (Arena.StateOf(e.BadFrame) == FrameState.Shared) otherSharers |= Arena.ReportShared(e.BadFrame) is not null;
                continue;
            }
            if (_handled.ContainsKey(e.BadFrame.Value)) continue;
            _handled[e.BadFrame.Value] = e.Contained ? ErrorOutcome.Contained : ErrorOutcome.Recovered;
            if (e.Contained) Unrecoverable?.Invoke(e.Page);
        }
        // Each still behind its page and Poisoned (a guest touch may have had the handler recover it meanwhile;
        // that event is then in the next batch).
        foreach (HandlerEvent e in reported ?? [])
            if (Vm.Translate(e.Page) == e.BadFrame && Vm.StateOf(e.Page) == GuestPageState.Poisoned && !_handled.ContainsKey(e.BadFrame.Value))
            {
                KernelReported++;
                RecoverPage(e.Page, e.BadFrame);
            }
        if (otherSharers) DrainHandlerEvents(); // this VM's other sharers of that frame
    }

    /// <summary>Errors the kernel reported on a page nobody was touching (BUS_MCEERR_AO) that this engine
    /// then handled as reports.</summary>
    public long KernelReported { get; private set; }

    private HostFrame? TryAllocate()
    {
        try { return Arena.Allocate(1)[0]; }
        catch (ArenaExhaustedException) { return null; } // a fault took the last one meanwhile
    }

    private void Retire(HostFrame f)
    {
        Arena.Retire(f);
        _retired.Add(f.Value);
    }

    private HostFrame FreshParity()
    {
        HostFrame fresh = Arena.Allocate(1)[0];
        Arena.Transition([fresh], FrameState.Held, FrameState.Parity);
        return fresh;
    }

    private void FreeParity(HostFrame parity)
    {
        Arena.Transition([parity], FrameState.Parity, FrameState.Held);
        Arena.ReleaseOrZero([parity]);
    }

    private GuestPage? PageOf(HostFrame frame)
    {
        for (ulong g = 0; g < Vm.PageCount; g++)
            if (Vm.Translate(new GuestPage(g)) == frame) return new GuestPage(g);
        return null;
    }

    /// <summary>Dissolves every parity group and gives the parity frames back to the arena. The VM's
    /// protected pages stay read-only (a write simply makes them writable again).</summary>
    public void Dispose()
    {
        lock (_sync)
        {
            if (_disposed) return;
            _disposed = true;
            foreach ((uint parity, int group) in _groupOfParity)
            {
                if (!Vm.IsDisposed)
                {
                    try { Vm.FreeParityGroup(group); }
                    catch (ObjectDisposedException) { } // the VM went meanwhile: its groups went with it
                }
                FreeParity(new HostFrame(parity));
            }
            _groupOfParity.Clear();
            _grouped.Clear();
            _aging.Clear();
        }
    }
}
