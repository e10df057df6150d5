// The cooperative memory scheduler: watches each VM's use of its guest physical memory (working-set
// sampling and the guest's own reports), asks its policy for each VM's allocation, lends host memory no
// VM uses to VMs that need it, and moves memory by driving balloon applications: frames reclaimed from
// one VM's balloon are mapped into another's. Memory is taken back in ESX's order when the scenario says so:
// page sharing first, then the balloon, then host swap (Reclamation.cs).
using PageLab.Core.Balloon;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Sharing;

namespace PageLab.Core.Scheduling;

public sealed record SchedulerOptions
{
    /// <summary>Host pages the scheduler shares out among VMs.</summary>
    public required ulong HostPages { get; init; }
    public double IdleTax { get; init; } = ShareAllocation.DefaultIdleTax;
    /// <summary>Most pages one balloon step inflates or deflates per VM.</summary>
    public int BatchPages { get; init; } = 256;
    public int SamplePages { get; init; } = 100;
    /// <summary>Decides allocations at the end of every sampling period.</summary>
    public IAllocationPolicy Policy { get; init; } = new EsxPolicy();
    /// <summary>Host pages no VM holds are lent to VMs that page for them, past their allocation, and called
    /// back only when a VM below its allocation needs them (lowest shares per page first). False: an
    /// allocation is a hard limit (a static partition).</summary>
    public bool WorkConserving { get; init; } = true;
    /// <summary>The mechanisms that take memory back from a VM over its ceiling, in ESX's order.</summary>
    public Reclamation Reclamation { get; init; } = Reclamation.Balloon;
    /// <summary>Pages the sharing scanner looks at per step (KSM's pages_to_scan per wake-up: 100).</summary>
    public int ScanPagesPerStep { get; init; } = 100;
    public int Seed { get; init; } = 1;
}

/// <summary>Frames one step moved: from one VM's balloon into another VM (both named), from the free
/// arena into a VM (<paramref name="From"/> null), or from a VM's balloon back to the arena
/// (<paramref name="To"/> null).</summary>
public readonly record struct FrameMove(string? From, string? To, int Frames);

/// <summary>Pages moved by one scheduler step.</summary>
public sealed record StepReport(IReadOnlyDictionary<string, int> Inflated, IReadOnlyDictionary<string, int> Deflated,
    int TransferredFrames, int RefusedReports)
{
    /// <summary>Pages each VM's host swap took in the step (reclamation's last resort), by VM.</summary>
    public IReadOnlyDictionary<string, int> HostSwapped { get; init; } = new Dictionary<string, int>();
    /// <summary>Pages the sharing scanner looked at in the step, and pages it merged.</summary>
    public int PagesScanned { get; init; }
    public int PagesMerged { get; init; }
}

public sealed partial class MemoryScheduler
{
    private readonly List<ScheduledVm> _vms = new();
    private readonly Random _rng;

    public MemoryScheduler(HostArena arena, SchedulerOptions options)
    {
        if (options.HostPages > arena.FrameCount)
            throw new ArgumentOutOfRangeException(nameof(options), options.HostPages,
                $"host pages {options.HostPages} pass the arena's {arena.FrameCount} frames");
        Arena = arena;
        Options = options;
        _rng = new Random(options.Seed);
    }

    public HostArena Arena { get; }
    public SchedulerOptions Options { get; }
    public IReadOnlyList<ScheduledVm> Vms => _vms;
    public long TransferredFrames { get; private set; }
    /// <summary>The sharing scanner, when the reclamation order shares (null otherwise). Made at the first step,
    /// over the VMs that opted in.</summary>
    public PageScanner? Scanner { get; private set; }

    /// <summary>Raised during <see cref="Step"/> for every run of frames it moves, in the order it moves
    /// them (for traces and metrics; the handler must not call back into the scheduler).</summary>
    public event Action<FrameMove>? FramesMoved;

    public ScheduledVm Add(GuestOperatingSystem os, BalloonApplication app, int shares, ulong minPages, ulong maxPages, ulong allocationPages)
    {
        string name = os.Vm.Name;
        if (minPages > maxPages) throw new ArgumentException($"VM '{name}': min {minPages} pages > max {maxPages}");
        if (maxPages > os.Vm.PageCount) throw new ArgumentException($"VM '{name}': max {maxPages} pages > its {os.Vm.PageCount} guest pages");
        if (allocationPages < minPages || allocationPages > maxPages)
            throw new ArgumentException($"VM '{name}': initial allocation {allocationPages} outside [{minPages}, {maxPages}]");
        ulong committed = _vms.Aggregate(0UL, (s, v) => s + v.AllocationPages) + allocationPages;
        if (committed > Options.HostPages)
            throw new ArgumentException($"VM '{name}': allocations would total {committed} pages, more than the host's {Options.HostPages}");
        var vm = new ScheduledVm(os, app, shares, minPages, maxPages, allocationPages, _rng, Options.SamplePages,
            Options.Reclamation.HasFlag(Reclamation.Balloon));
        // Work-conserving, a VM starts with all it may have: nothing is reclaimed before a VM needs it (ESX
        // balloons only when the host runs short), so a boot inflates no balloon.
        if (Options.WorkConserving) vm.CeilingPages = maxPages;
        vm.ChargedAtStep = vm.ChargedFrames;
        vm.OverAtStep = vm.ChargedAtStep > (long)vm.CeilingPages;
        _vms.Add(vm);
        try
        {
            // Its workload may touch its memory before the first step (an application loading its data).
            SetNativeLimits();
        }
        catch
        {
            _vms.Remove(vm);
            throw;
        }
        os.EnsureDemandFrame = urgent => ProvideDemandFrame(vm, urgent);
        return vm;
    }

    /// <summary>Sampling periods finished so far.</summary>
    public int Periods { get; private set; }

    /// <summary>Ends a sampling period for every VM (sampling and the guest's working-set report) and asks
    /// the policy for new allocations, which it checks before it applies them.</summary>
    public void SamplePeriod()
    {
        Periods++;
        var signals = new List<VmSignals>(_vms.Count);
        foreach (ScheduledVm v in _vms)
        {
            SmoothSharingCredit(v);
            v.WorkingSet.NextPeriod();
            v.LastReport = v.Os.ReportWorkingSet([.. Options.Policy.Traits.ReportBins]);
            GuestMemoryStats st = v.Os.Stats;
            ulong held = (ulong)Math.Max(0, v.Vm.HeldFrames - v.Vm.PoolCount);
            signals.Add(new VmSignals(v.Vm.Name, v.Shares, v.MinPages, v.MaxPages, v.Vm.PageCount, v.AllocationPages, held,
                v.WorkingSet.Periods > 0 ? v.WorkingSet.ActiveFraction : null, v.LastReport,
                st.SwapIns - v.SwapInsAtPeriod, st.SwapOuts - v.SwapOutsAtPeriod));
            v.SwapInsAtPeriod = st.SwapIns;
            v.SwapOutsAtPeriod = st.SwapOuts;
            v.ActiveFraction = signals[^1].SampledFractionOfAllocation;
            v.ActiveEstimatePages = Options.Policy.EstimatePages(signals[^1]);
        }
        var request = new AllocationRequest(Options.HostPages, Options.IdleTax, Periods, signals);
        ulong[] targets;
        try
        {
            targets = Options.Policy.Allocate(request);
        }
        catch (Exception e) when (e is not PolicyException)
        {
            throw new PolicyException($"policy '{Options.Policy.Name}' failed in period {Periods}: {e.Message}");
        }
        Check(targets);
        for (int i = 0; i < _vms.Count; i++)
        {
            ScheduledVm v = _vms[i];
            v.AllocationPages = targets[i];
            v.CeilingPages = Options.WorkConserving ? Math.Max(v.CeilingPages, targets[i]) : targets[i];
        }
        UpdateCeilings();
    }

    // A policy is code the scheduler did not write: its answer is checked like a guest's.
    private void Check(ulong[]? targets)
    {
        string who = $"policy '{Options.Policy.Name}'";
        if (targets is null || targets.Length != _vms.Count)
            throw new PolicyException($"{who} returned {targets?.Length.ToString() ?? "null"} allocations for {_vms.Count} VMs");
        ulong sum = 0;
        for (int i = 0; i < targets.Length; i++)
        {
            ScheduledVm v = _vms[i];
            if (targets[i] < v.MinPages || targets[i] > v.MaxPages)
                throw new PolicyException($"{who} gave VM '{v.Vm.Name}' {targets[i]} pages, outside its [{v.MinPages}, {v.MaxPages}]");
            sum += targets[i];
        }
        if (sum > Options.HostPages)
            throw new PolicyException($"{who} gave {sum} pages in all, more than the host's {Options.HostPages}");
    }

    // The frame limit of the engine's own faults: those of native code touching guest memory (an application's
    // heap), which no guest OS hook sees. Below the limit the handler takes a free frame; at it, it host-swaps one
    // of the VM's own pages. A VM may grow past its allocation into its ceiling (lent pages, work conservation)
    // as the guest OS's demand path does (ProvideDemandFrame: never past the host's free pages). The handler never
    // looks at the host's total, so each VM that may still grow is lent an equal part of the host's free pages
    // beyond the reserve: together they cannot take more than the host has. Without that part the limit was the
    // allocation, and native code host-swapped its own pages while the host had thousands free.
    private void SetNativeLimits()
    {
        long spare = Math.Max(0, FreeHostPages - Reserve);
        int growing = _vms.Count(v => (long)v.CeilingPages > v.Vm.HeldFrames);
        foreach (ScheduledVm v in _vms)
        {
            ulong limit = NativeLimit(v, (long)v.CeilingPages > v.Vm.HeldFrames ? spare / growing : 0);
            v.Vm.SetFrameLimit(limit);
            v.FrameLimitPages = limit;
        }
    }

    // The engine counts only the frames a VM owns; its part of the shared frames is memory it uses all the same.
    private static ulong NativeLimit(ScheduledVm v, long lend) =>
        (ulong)Math.Max(0, Math.Min((long)v.CeilingPages, Math.Max((long)v.AllocationPages, Math.Max(0, v.Vm.HeldFrames) + lend)) - v.SharingChargeFrames);

    /// <summary>Host pages kept free for demand pools and steps in flight: neither lent nor given to native faults.</summary>
    private long Reserve => Math.Min(Options.BatchPages, (long)Options.HostPages / 50);

    /// <summary>Host pages no VM holds (demand pools included; negative while VMs are overcommitted). Shared
    /// frames are owned by no VM but are host memory in use: they count as held (by their sharers).</summary>
    public long FreeHostPages => (long)Options.HostPages - _vms.Sum(v => v.ChargedFrames);

    // Work conservation, once per step. A VM below its allocation that pages may take what it is owed at
    // once: if the host's free pages do not cover that, pages lent to other VMs are called back, from the VM
    // with the fewest shares per page it holds first (min-funding revocation, Waldspurger 2002, section 5).
    // Otherwise what is free beyond a small reserve is lent, a batch per step, to VMs that page at their
    // ceiling, the most shares per page first. Without work conservation the ceiling is the allocation.
    private void UpdateCeilings()
    {
        var pressed = new bool[_vms.Count];
        for (int i = 0; i < _vms.Count; i++)
        {
            ScheduledVm v = _vms[i];
            GuestMemoryStats st = v.Os.Stats;
            ulong paging = st.SwapIns + st.SwapOuts;
            pressed[i] = paging > v.PagingAtStep || v.HostPressureStalls > v.StallsAtStep;
            v.PagingAtStep = paging;
            v.StallsAtStep = v.HostPressureStalls;
            if (!Options.WorkConserving) v.CeilingPages = v.AllocationPages;
        }
        if (!Options.WorkConserving) return;
        long batch = Options.BatchPages;
        long reserve = Reserve;
        long free = FreeHostPages;
        var held = _vms.Select(v => v.ChargedFrames).ToArray();
        long owed = 0;
        for (int i = 0; i < _vms.Count; i++)
            if (pressed[i] && held[i] < (long)_vms[i].AllocationPages)
                owed += Math.Min(batch, (long)_vms[i].AllocationPages - held[i]);
        if (free - reserve < owed)
        {
            long callBack = owed + reserve - free;
            foreach (int i in Enumerable.Range(0, _vms.Count).Where(i => _vms[i].CeilingPages > _vms[i].AllocationPages)
                         .OrderBy(i => _vms[i].Shares / (double)Math.Max(1, held[i])).ThenBy(i => i))
            {
                ScheduledVm v = _vms[i];
                long lent = Math.Max(0, Math.Min((long)v.CeilingPages, held[i]) - (long)v.AllocationPages);
                long take = Math.Min(callBack, lent);
                // Lent pages the VM was not using yet go first: its ceiling drops to what it holds.
                v.CeilingPages = (ulong)Math.Max((long)v.AllocationPages, Math.Min((long)v.CeilingPages, held[i]) - take);
                callBack -= take;
            }
            return;
        }
        long lendable = free - reserve - owed;
        foreach (int i in Enumerable.Range(0, _vms.Count).Where(i => pressed[i] && held[i] >= (long)_vms[i].AllocationPages)
                     .OrderByDescending(i => _vms[i].Shares / (double)Math.Max(1, held[i])).ThenBy(i => i))
        {
            ScheduledVm v = _vms[i];
            long grant = Math.Min(Math.Min(batch, lendable), (long)v.MaxPages - (long)v.CeilingPages);
            if (grant <= 0) continue;
            v.CeilingPages += (ulong)grant;
            lendable -= grant;
        }
    }

    /// <summary>One bounded step of every balloon towards its target. Frames reclaimed from inflating
    /// VMs are mapped straight into deflating VMs; what is left returns to the arena.</summary>
    public StepReport Step()
    {
        var inflated = new Dictionary<string, int>();
        var deflated = new Dictionary<string, int>();
        var frames = new List<HostFrame>();
        // Where the frames in `frames` came from, front to back (a VM's name, or null for the arena).
        var sources = FramesMoved is null ? null : new List<(string? Vm, int Frames)>();
        int refused = 0;
        foreach (ScheduledVm v in _vms) v.ChargedAtStepStart = v.ChargedFrames;
        // 1. Share: the scanner runs first, and what it saves counts before any balloon inflates.
        (int scanned, int merged) = Share();
        UpdateCeilings();
        // The engine's own faults (a host-swapped page touched again, a fault no guest OS hook saw) take free
        // frames only below this limit and never look at the host's total: past its allocation a VM grows
        // through them only by its part of the host's free pages (SetNativeLimits), and through
        // ProvideDemandFrame, which is bounded by them; the ceiling itself (the balloon target) may be higher.
        SetNativeLimits();
        try
        {
            foreach (ScheduledVm v in _vms)
            {
                v.Balloon.TouchAll();
                v.Balloon.SetTarget(v.BalloonTargetPages);
                if (v.Ballooning && v.Backend.ActualPages < v.BalloonTargetPages)
                {
                    ReclaimResult r = v.Backend.Inflate((int)Math.Min((ulong)Options.BatchPages, v.BalloonTargetPages - v.Backend.ActualPages));
                    frames.AddRange(r.Frames);
                    if (r.Frames.Length > 0) sources?.Add((v.Vm.Name, r.Frames.Length));
                    refused += r.RefusedCount;
                    inflated[v.Vm.Name] = r.Frames.Length;
                }
            }
            int reclaimed = frames.Count;
            foreach (ScheduledVm v in _vms)
            {
                if (v.Backend.ActualPages <= v.BalloonTargetPages) continue;
                int want = (int)Math.Min((ulong)Options.BatchPages, v.Backend.ActualPages - v.BalloonTargetPages);
                long room = (long)v.CeilingPages - v.Vm.HeldFrames;
                want = (int)Math.Min(want, Math.Max(0, room));
                // From the arena only what no VM holds: its slack is for demand pools and steps in flight.
                long freeHost = Math.Min(FreeHostPages - frames.Count, Arena.Counts.Free);
                if (want > frames.Count && freeHost > 0)
                {
                    int fromArena = (int)Math.Min(want - frames.Count, freeHost);
                    frames.AddRange(Arena.Allocate((uint)fromArena));
                    sources?.Add((null, fromArena));
                }
                int take = Math.Min(want, frames.Count);
                int used = v.Backend.Deflate(take, frames.Take(take).ToArray());
                frames.RemoveRange(0, used);
                if (sources is not null) RaiseMoves(sources, used, v.Vm.Name);
                deflated[v.Vm.Name] = used;
                TransferredFrames += Math.Min(used, reclaimed);
                reclaimed = Math.Max(0, reclaimed - used);
            }
            if (sources is not null) RaiseMoves(sources, frames.Count, to: null);
            Dictionary<string, int> swapped = HostSwapExcess();
            UpdateSharingCredits(endOfStep: true);
            foreach (ScheduledVm v in _vms)
            {
                v.ChargedAtStep = v.ChargedFrames;
                v.OverAtStep = v.ChargedAtStep > (long)v.CeilingPages;
            }
            SetNativeLimits();      // the step moved frames: the host's free pages until the next step
            return new StepReport(inflated, deflated, deflated.Values.Sum(), refused)
            {
                HostSwapped = swapped, PagesScanned = scanned, PagesMerged = merged,
            };
        }
        finally
        {
            // Whatever no VM took goes back to the arena, also when a step fails half way (a frame a
            // failed deflate did map is the VM's now, no longer Held, and stays where it is).
            HostFrame[] left = frames.Where(f => Arena.StateOf(f) == FrameState.Held).ToArray();
            if (left.Length > 0) Arena.Release(left);
        }
    }

    // Host swap, the last mechanism: a VM that still costs more than its ceiling after sharing and its balloon
    // had their turn, and whose balloon made no progress (out of puff, unresponsive, at target, or none), has
    // pages swapped out by the host, a batch per step. Progress is what the host got back, not pages the balloon
    // reported: a guest with nothing left to give but pinned pages pages the balloon's own pages out to back the
    // next ones it reserves, and the frame the host takes for the one page reported is the frame the guest got
    // back to reserve it (measured on examples/sqlite.json with a fixed cache: 1 page "inflated" a step, 255
    // guest page-outs, the VM 65 frames over its ceiling for 100 ticks). So a VM already over its ceiling at the
    // previous step must cost fewer frames than then (frames the guest took back between steps count against its
    // balloon); one newly over (it grew within its ceiling, or lent pages were just called back) must have come
    // down in this step. ESX falls back to host swap when ballooning does not bring a VM down in time.
    private Dictionary<string, int> HostSwapExcess()
    {
        var swapped = new Dictionary<string, int>();
        if (!Options.Reclamation.HasFlag(Reclamation.HostSwap)) return swapped;
        foreach (ScheduledVm v in _vms)
        {
            if (v.Ballooning && v.ChargedFrames < (v.OverAtStep ? v.ChargedAtStep : v.ChargedAtStepStart)) continue;
            long excess = v.ChargedFrames - (long)v.CeilingPages;
            if (excess <= 0) continue;
            int n = v.Vm.HostSwapOut((int)Math.Min(excess, Options.BatchPages));
            if (n > 0) swapped[v.Vm.Name] = n;
        }
        return swapped;
    }

    // Takes `count` frames off the front of `sources` and reports them, one move per source.
    private void RaiseMoves(List<(string? Vm, int Frames)> sources, int count, string? to)
    {
        while (count > 0 && sources.Count > 0)
        {
            (string? from, int n) = sources[0];
            int moved = Math.Min(n, count);
            if (moved == n) sources.RemoveAt(0);
            else sources[0] = (from, n - moved);
            count -= moved;
            if (from is not null || to is not null) FramesMoved?.Invoke(new FrameMove(from, to, moved));
        }
    }

    // The vCPU's exit to the host when the guest is about to use a page with no frame behind it:
    // the host gives a frame within the VM's allocation, or beyond it (overcommit) only when the guest
    // has nothing left to page out, so a guest is never stuck while the host has frames.
    private bool ProvideDemandFrame(ScheduledVm v, bool urgent)
    {
        if (v.Vm.PoolCount > 0) return true;
        long room = urgent ? 1 : Math.Min((long)v.CeilingPages - v.Vm.HeldFrames, FreeHostPages);
        if (room > 0 && Arena.Counts.Free > 0 && v.Vm.RefillPool((int)Math.Min(room, 64)) > 0)
        {
            if (urgent) v.Overcommitted++;
            return true;
        }
        if (!urgent) v.HostPressureStalls++;
        return false;
    }
}
