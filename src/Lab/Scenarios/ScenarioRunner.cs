// Runs a scenario: builds the arena, VMs, guest OSes, balloon applications and the scheduler, then
// advances time tick by tick (workloads, balloon steps, sampling periods) and reports every VM's memory.
using System.Diagnostics;
using PageLab.Core.Balloon;
using PageLab.Core.Condition;
using PageLab.Core.Recovery;
using PageLab.Core.Faults;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Scheduling;
using PageLab.Lab.Workloads;
using PageLab.Lab.Observation;
using PageLab.Core;

namespace PageLab.Lab.Scenarios;

/// <summary>One VM's memory at one tick (a superset of the virtio-balloon statistics).</summary>
public sealed record VmSnapshot(
    string Name, ulong Pages, ulong AllocationPages, long HeldFrames, ulong BalloonTarget, ulong BalloonActual,
    ulong ActiveEstimatePages, ulong WorkingSetPages, ulong FreePages, ulong AvailablePages,
    ulong SwapIns, ulong SwapOuts, ulong MajorFaults, ulong MinorFaults, ulong DemandFaults, ulong HostStalls,
    ulong BalloonPageOuts, ulong OomKills, MemoryLevel Condition, ulong TrueAvailablePages,
    ulong HostSwapOuts = 0, ulong HostSwapIns = 0)
{
    /// <summary>Guest pages mapping a shared frame now.</summary>
    public long SharedPages { get; init; }
    /// <summary>Writes to shared pages so far (each a copy-on-write fault and a frame).</summary>
    public ulong CowBreaks { get; init; }
    /// <summary>The VM's part of the frames sharing saves (its balloon target leaves it out).</summary>
    public ulong SharingCreditPages { get; init; }
    /// <summary>Image reads that saw anything but the image's bytes so far (must be 0).</summary>
    public long ImageWrongReads { get; init; }
    /// <summary>Never-used pages its demand faults mapped besides their own so far (fault-around).</summary>
    public ulong FaultedAroundPages { get; init; }
    /// <summary>Frames its faults took by host-swapping another VM's page on a full arena so far.</summary>
    public ulong FramesTakenFromOthers { get; init; }
    /// <summary>Its application's totals so far (a sqlite workload), or null.</summary>
    public AppTotals? App { get; init; }
    /// <summary>Its guest's page-cache pages now (virtio-balloon's disk caches).</summary>
    public ulong PageCachePages { get; init; }
    /// <summary>Page-cache pages its guest's reclaim dropped, misses on dropped pages, dirty pages written back, so far.</summary>
    public ulong PageCacheDroppedPages { get; init; }
    public ulong PageCacheRefaults { get; init; }
    public ulong DirtyWritebacks { get; init; }
}

public sealed record TickSnapshot(int Tick, IReadOnlyList<VmSnapshot> Vms, long FreeFrames, long TransferredFrames, StepReport Step)
{
    /// <summary>Shared frames in the arena, and the guest pages (of all VMs) mapping them.</summary>
    public SharingCounts Sharing { get; init; }
}

public sealed class ScenarioRunner : IDisposable
{
    private readonly List<IWorkload> _workloads = new();
    private readonly List<ImageWorkload?> _images = new();          // per VM, null where it boots no image
    private readonly Dictionary<string, (ulong Merged, ulong Cow)> _shareSeen = new(); // per VM, at the last share event
    private readonly List<FreePageReporting?> _reporting = new();    // per VM, null where the guest does not report
    private readonly List<(GuestProcess Kernel, RecoveryEngine Engine)> _recovery = new();
    private readonly Random _rng;
    private readonly Dictionary<string, long> _refused = new();   // each VM's refused balloon reports so far
    private readonly List<FrameMove> _moves = new();        // moves of the step in progress, raised after it
    private readonly PageLabMetrics.Source _metrics;
    private MemoryLevel[] _levels = [];
    private int _tick;
    private GuestVm? _unscheduled; // created but not yet owned by the scheduler (for cleanup on failure)
    private readonly string _tempDirectory; // the run's temporary files: swap files, an application's database

    /// <param name="policy">The allocation policy (default: the one the scenario names).</param>
    public ScenarioRunner(Scenario scenario, string? swapDirectory = null, IAllocationPolicy? policy = null)
    {
        _tempDirectory = swapDirectory ?? Path.GetTempPath();
        scenario.Validate();
        policy ??= CreatePolicy(scenario.PolicyName);    // before any memory is made: it may be refused
        Scenario = scenario;
        _rng = new Random(scenario.Seed);
        const uint pool = 64;
        // Host memory for guests, plus room for every demand pool and for frames in flight in a step.
        // Plus the kernels' parity frames and one fresh frame per injected error.
        uint parity = (uint)scenario.Vms.Sum(v => (long)v.KernelPages / 8 + 2);
        uint frames = checked((uint)scenario.HostPages + pool * (uint)scenario.Vms.Count + (uint)scenario.BatchPages
                              + parity + (uint)scenario.Injections.Count);
        Arena = HostArena.Create(frames, $"pagelab-{scenario.Name}");
        Scheduler = new MemoryScheduler(Arena, new SchedulerOptions
        {
            HostPages = scenario.HostPages, IdleTax = scenario.IdleTax, BatchPages = scenario.BatchPages,
            Policy = policy, Seed = scenario.Seed,
            WorkConserving = scenario.WorkConserving && policy.Traits.WorkConserving,
            Reclamation = ReclamationParse.Parse(scenario.Reclamation), ScanPagesPerStep = scenario.ScanPagesPerTick,
        });
        try
        {
            foreach (VmSpec spec in scenario.Vms)
            {
                GuestVm vm = GuestVm.Create(Arena, spec.Name, spec.Pages, pool);
                _unscheduled = vm;
                if (spec.Sharing && Scheduler.Options.Reclamation.HasFlag(Reclamation.Share)) vm.EnableSharing();
                vm.SetFaultAround(scenario.FaultAroundPages);
                var os = new GuestOperatingSystem(vm, new GuestOsOptions { SwapDirectory = swapDirectory, Swappiness = spec.Swappiness });
                // A VM that shares writes the shareable balloon value, so balloon pages left mapped collapse onto one frame.
                var app = new BalloonApplication(os, vm.Id, shareableValue: vm.SharingEnabled);
                Scheduler.Add(os, app, spec.Shares, spec.MinPages, spec.MaxPages ?? spec.Pages, scenario.InitialOf(spec));
                _unscheduled = null;
                _recovery.Add(BootKernel(os, spec.KernelPages));
                _reporting.Add(spec.FreePageReporting is { } fpr
                    ? new FreePageReporting(os, new FreePageReportingOptions { DelayTicks = fpr.DelayTicks, FractionPerPass = fpr.FractionPerPass })
                    : null);
                _images.Add(spec.Image is { } image ? new ImageWorkload(os, image) : null);
                _workloads.Add(CreateWorkload(os, spec, scenario, _tempDirectory));
                if (os.PageCacheIfUsed is { } cache) ProtectPageCache(cache, _recovery[^1].Engine);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        Condition = new ConditionService(Scheduler);
        // An application adapts to the hypervisor's condition (the hypercall) or to its guest's free memory.
        for (int i = 0; i < _workloads.Count; i++)
            if (_workloads[i] is IApplicationWorkload app)
            {
                string name = Scheduler.Vms[i].Vm.Name;
                app.FollowCondition(Condition.Thresholds, previous => Condition.GuestOsReport(name, previous), () => Condition.Query(name));
            }
        Scheduler.FramesMoved += _moves.Add;
        _metrics = PageLabMetrics.Register(scenario.Name);
    }

    /// <summary>Every event of the run, in order: the scenario at boot, decisions, balloon steps, frame
    /// moves, condition changes, events reported through <see cref="Record"/>, and the end.</summary>
    public event Action<RunEvent>? EventRaised;

    /// <summary>Every VM's memory after boot (tick 0) and after every tick.</summary>
    public event Action<TickSnapshot>? Ticked;

    public Scenario Scenario { get; }
    public HostArena Arena { get; }
    public MemoryScheduler Scheduler { get; }
    /// <summary>The hypercall service guest applications query for their VM's memory condition.</summary>
    public ConditionService Condition { get; }
    public int Tick => _tick;

    // A user's policy is loaded only now, when the scenario runs (checking one loads nothing).
    private static IAllocationPolicy CreatePolicy(string name)
    {
        try
        {
            return PolicyCatalog.Create(name);
        }
        catch (ArgumentException e)
        {
            throw new ScenarioException("scenario", "policy", e.Message);
        }
    }

    private const int BootPatienceSteps = 16;

    /// <summary>Progress of <see cref="Boot"/>: balloon pages inflated so far and the pages to inflate.</summary>
    public event Action<ulong, ulong>? BootProgress;

    /// <summary>Inflates every balloon to its starting target so each VM fits its starting ceiling (its
    /// initial allocation; with work conservation, all it may have, so nothing is inflated).</summary>
    /// <param name="stopRequested">Polled between balloon steps: true ends the boot early (e.g. Ctrl-C).</param>
    public void Boot(Func<bool>? stopRequested = null)
    {
        Raise(new RunEvent { Tick = 0, Kind = RunEventKind.Run, Scenario = Scenario });
        ulong toInflate = Scheduler.Vms.Aggregate(0UL, (s, v) => s + v.BalloonTargetPages);
        // Steps until the balloons stop moving, or stop getting closer to their targets: a guest whose pinned
        // pages leave its balloon short of its target would otherwise inflate and deflate for ever.
        ulong bestGap = ulong.MaxValue;
        for (int i = 0, stale = 0; i < 10_000 && stale < BootPatienceSteps && stopRequested?.Invoke() != true; i++)
        {
            if (toInflate > 0)
                BootProgress?.Invoke(Scheduler.Vms.Aggregate(0UL, (s, v) => s + Math.Min(v.Backend.ActualPages, v.BalloonTargetPages)), toInflate);
            StepReport r = StepAndReport();
            if (r.Inflated.Values.Sum() == 0 && r.Deflated.Values.Sum() == 0) break;
            ulong gap = Scheduler.Vms.Aggregate(0UL, (s, v) => s + (ulong)Math.Abs((long)v.Backend.ActualPages - (long)v.BalloonTargetPages));
            if (gap < bestGap) (bestGap, stale) = (gap, 0);
            else stale++;
        }
        SamplePeriodAndReport();
        List<VmSnapshot> vms = Snapshot();
        _levels = vms.Select(v => v.Condition).ToArray();
        Publish(new TickSnapshot(0, vms, Arena.Counts.Free, Scheduler.TransferredFrames, new StepReport(
            new Dictionary<string, int>(), new Dictionary<string, int>(), 0, 0)) { Sharing = Arena.Sharing });
    }

    /// <summary>Reports an event from another layer (an injected error, a recovery) at the current tick:
    /// it goes to the trace, the timeline's markers and the metrics like the runner's own events.</summary>
    public void Record(RunEvent e)
    {
        ArgumentNullException.ThrowIfNull(e);
        if (e.Tick != _tick) throw new ArgumentException($"event at tick {e.Tick} reported at tick {_tick}", nameof(e));
        if (e.Kind is not (RunEventKind.Injection or RunEventKind.Recovery))
            throw new ArgumentException($"only injection and recovery events are reported from outside, got {e.Kind}", nameof(e));
        if (e.Vm is not null && !Scheduler.Vms.Any(v => v.Vm.Name == e.Vm))
            throw new ArgumentException($"event for VM '{e.Vm}', which is not in scenario '{Scenario.Name}'", nameof(e));
        var tags = PageLabMetrics.With(_metrics, PageLabMetrics.VmTag, e.Vm);
        if (e.Missed != true) (e.Kind == RunEventKind.Injection ? PageLabMetrics.Injections : PageLabMetrics.Recoveries).Add(1, tags);
        Raise(e);
    }

    /// <summary>Advances one tick: every workload runs, every balloon takes one step, and at the end of
    /// a sampling period the scheduler re-estimates working sets and reallocates.</summary>
    public TickSnapshot Advance()
    {
        long start = Stopwatch.GetTimestamp();
        _tick++;
        foreach (ScheduledVm v in Scheduler.Vms) v.Os.SetTime(_tick);
        for (int i = 0; i < _workloads.Count; i++)
        {
            _workloads[i].Step(_tick, _rng);
            _images[i]?.Step(_rng);
        }
        for (int i = 0; i < _reporting.Count; i++)
            if (_reporting[i]?.Pass(_tick) is int n and > 0)
                Raise(new RunEvent { Tick = _tick, Kind = RunEventKind.Return, From = Scheduler.Vms[i].Vm.Name, Frames = n, Detail = "free page reporting" });
        foreach (InjectionSpec j in Scenario.Injections)
            if (j.Tick == _tick) Inject(j);
        if (_tick % Scenario.SamplePeriodTicks == 0) SamplePeriodAndReport();
        StepReport step = StepAndReport();
        Condition.Tick(_tick);
        var snapshot = new TickSnapshot(_tick, Snapshot(), Arena.Counts.Free, Scheduler.TransferredFrames, step) { Sharing = Arena.Sharing };
        for (int i = 0; i < snapshot.Vms.Count && i < _levels.Length; i++)
        {
            VmSnapshot v = snapshot.Vms[i];
            if (v.Condition == _levels[i]) continue;
            _levels[i] = v.Condition;
            Raise(new RunEvent { Tick = _tick, Kind = RunEventKind.Condition, Vm = v.Name, Level = v.Condition });
        }
        RaiseSamples(snapshot);
        if (_tick == Scenario.Ticks)
            Raise(new RunEvent { Tick = _tick, Kind = RunEventKind.End, Frames = snapshot.TransferredFrames });
        PageLabMetrics.TickDuration.Record(Stopwatch.GetElapsedTime(start).TotalMilliseconds, _metrics.Tags);
        Publish(snapshot);
        return snapshot;
    }

    /// <summary>Ends the run before its last tick, between two ticks: raises its last event,
    /// <see cref="RunEventKind.Interrupted"/>, at the current tick with <paramref name="why"/> as detail.</summary>
    public void Interrupt(string why)
    {
        if (_tick >= Scenario.Ticks) throw new InvalidOperationException($"the run already ended at tick {_tick}");
        Raise(new RunEvent { Tick = _tick, Kind = RunEventKind.Interrupted, Frames = Scheduler.TransferredFrames, Detail = why });
    }

    // One scheduler step, then its events in causal order: balloons inflate, frames move, balloons deflate.
    private StepReport StepAndReport()
    {
        long start = Stopwatch.GetTimestamp();
        _moves.Clear();
        StepReport r = Scheduler.Step();
        PageLabMetrics.StepDuration.Record(Stopwatch.GetElapsedTime(start).TotalMilliseconds, _metrics.Tags);
        RaiseSharing();
        foreach (ScheduledVm v in Scheduler.Vms)
        {
            long refusedBefore = _refused.GetValueOrDefault(v.Vm.Name);
            long refused = v.Backend.RefusedTotal - refusedBefore;
            _refused[v.Vm.Name] = v.Backend.RefusedTotal;
            if (refused > 0) PageLabMetrics.Refused.Add(refused, PageLabMetrics.With(_metrics, PageLabMetrics.VmTag, v.Vm.Name));
            if ((r.Inflated.TryGetValue(v.Vm.Name, out int n) && n > 0) || refused > 0)
                Raise(new RunEvent
                {
                    Tick = _tick, Kind = RunEventKind.Inflate, Vm = v.Vm.Name, Frames = n,
                    BalloonTargetPages = v.BalloonTargetPages, BalloonActualPages = v.Backend.ActualPages,
                    Refused = refused > 0 ? (int)refused : null,
                });
        }
        foreach (FrameMove m in _moves)
        {
            RunEventKind kind = m.From is null ? RunEventKind.Grant : m.To is null ? RunEventKind.Return : RunEventKind.Transfer;
            if (kind == RunEventKind.Transfer)
            {
                TagList tags = PageLabMetrics.With(_metrics, PageLabMetrics.FromTag, m.From);
                tags.Add(PageLabMetrics.ToTag, m.To);
                PageLabMetrics.Transfers.Add(m.Frames, tags);
            }
            Raise(new RunEvent { Tick = _tick, Kind = kind, From = m.From, To = m.To, Frames = m.Frames });
        }
        foreach (ScheduledVm v in Scheduler.Vms)
            if (r.Deflated.TryGetValue(v.Vm.Name, out int n) && n > 0)
                Raise(new RunEvent
                {
                    Tick = _tick, Kind = RunEventKind.Deflate, Vm = v.Vm.Name, Frames = n,
                    BalloonTargetPages = v.BalloonTargetPages, BalloonActualPages = v.Backend.ActualPages,
                });
        foreach (ScheduledVm v in Scheduler.Vms)
            if (r.HostSwapped.TryGetValue(v.Vm.Name, out int n) && n > 0)
            {
                PageLabMetrics.HostSwapped.Add(n, PageLabMetrics.With(_metrics, PageLabMetrics.VmTag, v.Vm.Name));
                Raise(new RunEvent { Tick = _tick, Kind = RunEventKind.HostSwap, Vm = v.Vm.Name, Frames = n });
            }
        return r;
    }

    // Per VM that has any, the traced figures of the measurement record (VmMeasures.Traced) at this tick.
    private void RaiseSamples(TickSnapshot snapshot)
    {
        var host = new TickHost(snapshot.FreeFrames, snapshot.Sharing.SharedFrames, 0);
        foreach (VmSnapshot v in snapshot.Vms)
        {
            Dictionary<string, long>? figures = null;
            foreach (VmMeasure m in VmMeasures.Traced)
                if (m.At(v, host) is double d) (figures ??= new())[m.Name] = (long)d;
            if (figures is not null) Raise(new RunEvent { Tick = _tick, Kind = RunEventKind.Sample, Vm = v.Name, Figures = figures });
        }
    }

    // Sharing, the first of the step's events (the scanner ran first): per VM that merged pages or broke
    // sharings (a guest write) since the last event, pages merged, its shared pages and its credit now.
    private void RaiseSharing()
    {
        if (Scheduler.Scanner is null) return;
        foreach (ScheduledVm v in Scheduler.Vms)
        {
            FaultCounters c = v.Vm.Counters;
            (ulong merged, ulong cow) = _shareSeen.GetValueOrDefault(v.Vm.Name);
            if (c.PagesMerged == merged && c.CowBreaks == cow) continue;
            _shareSeen[v.Vm.Name] = (c.PagesMerged, c.CowBreaks);
            PageLabMetrics.CowBreaks.Add((long)(c.CowBreaks - cow), PageLabMetrics.With(_metrics, PageLabMetrics.VmTag, v.Vm.Name));
            Raise(new RunEvent
            {
                Tick = _tick, Kind = RunEventKind.Share, Vm = v.Vm.Name, Frames = (long)(c.PagesMerged - merged),
                CowBreaks = (long)(c.CowBreaks - cow), SharedPages = v.Vm.SharedPages, SavedFrames = (long)v.SharingCreditPages,
            });
        }
    }

    // The end of a sampling period: new estimates and allocations, one decision event per VM.
    private void SamplePeriodAndReport()
    {
        long start = Stopwatch.GetTimestamp();
        Scheduler.SamplePeriod();
        PageLabMetrics.SamplePeriodDuration.Record(Stopwatch.GetElapsedTime(start).TotalMilliseconds, _metrics.Tags);
        foreach (ScheduledVm v in Scheduler.Vms)
            Raise(new RunEvent
            {
                Tick = _tick, Kind = RunEventKind.Decision, Vm = v.Vm.Name, AllocationPages = v.AllocationPages,
                BalloonTargetPages = v.BalloonTargetPages, BalloonActualPages = v.Backend.ActualPages,
                ActiveEstimatePages = ActiveEstimate(v),
            });
    }

    private void Raise(RunEvent e) => EventRaised?.Invoke(e);

    private void Publish(TickSnapshot s)
    {
        Ticked?.Invoke(s);
        if (!PageLabMetrics.Observed) return;
        FrameCounts c = Arena.Counts;
        var vms = new List<VmMetrics>(s.Vms.Count);
        for (int i = 0; i < s.Vms.Count; i++)
        {
            VmSnapshot v = s.Vms[i];
            FaultCounters f = Scheduler.Vms[i].Vm.Counters;
            var host = new TickHost(s.FreeFrames, s.Sharing.SharedFrames, 0);
            vms.Add(new VmMetrics(v.Name, VmMeasures.Metered.Select(m => m.At(v, host)).ToArray(),
                [("demand", f.DemandFaults), ("sample_touch", f.SampleTouches), ("pool_empty", f.PoolEmpty), ("map_failure", f.MapFailures),
                 ("guest_major", v.MajorFaults), ("guest_minor", v.MinorFaults), ("host_stall", v.HostStalls)]));
        }
        PageLabMetrics.Publish(_metrics, new RunMetrics(c.Free, c.Held + c.Guest + c.Parity + c.Shared, c.Retired, vms,
            s.Sharing.SharedFrames, s.Sharing.SharingPages));
    }

    private static ulong ActiveEstimate(ScheduledVm v) => v.ActiveEstimatePages;

    public IEnumerable<TickSnapshot> Run()
    {
        Boot();
        while (_tick < Scenario.Ticks) yield return Advance();
    }

    public List<VmSnapshot> Snapshot()
    {
        var list = new List<VmSnapshot>();
        for (int i = 0; i < Scheduler.Vms.Count; i++)
        {
            ScheduledVm v = Scheduler.Vms[i];
            GuestMemoryStats s = v.Os.Stats;
            FaultCounters f = v.Vm.Counters;
            long held = v.Vm.HeldFrames;
            ulong active = ActiveEstimate(v);
            MemoryConditionReport c = Condition.Query(v.Vm.Name);
            list.Add(new VmSnapshot(v.Vm.Name, v.Vm.PageCount, v.AllocationPages, held, v.BalloonTargetPages,
                v.Backend.ActualPages, active, _workloads[i].WorkingSetPages(_tick), s.FreePages, s.AvailablePages,
                s.SwapIns, s.SwapOuts, s.MajorFaults, s.MinorFaults, f.DemandFaults, v.HostPressureStalls,
                v.Balloon.PageOutsSeen, s.OomKills, c.Level, c.TrueAvailablePages, f.HostSwapOuts, f.HostSwapIns)
            {
                SharedPages = v.Vm.SharedPages, CowBreaks = f.CowBreaks, SharingCreditPages = v.SharingCreditPages,
                ImageWrongReads = _images[i]?.WrongReads ?? 0, FaultedAroundPages = f.FaultedAround,
                FramesTakenFromOthers = f.TakenFromOthers, App = (_workloads[i] as IApplicationWorkload)?.Totals(),
                PageCachePages = s.DiskCachePages, PageCacheDroppedPages = s.PageCacheDropped, PageCacheRefaults = s.PageCacheRefaults,
                DirtyWritebacks = s.DirtyWritebacks,
            });
        }
        return list;
    }

    /// <summary>Broken accounting rules (empty when every frame is where it should be).</summary>
    public List<string> CheckAccounting() => FrameAccounting.Check(Arena, Scheduler.Vms.Select(v => v.Vm).ToList());

    // The guest kernel: a pinned process whose pages are written at boot and protected by parity, as
    // the policy says for kernel-like pages. An error in a user page kills only the process using it.
    private static (GuestProcess, RecoveryEngine) BootKernel(GuestOperatingSystem os, ulong pages)
    {
        GuestProcess kernel = os.Spawn("kernel", pages, pinned: true);
        var gpas = new List<GuestPage>();
        for (ulong v = 0; v < pages; v++)
        {
            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(kernel.Page(v)).Fill(0x6B65726E656C0000UL | v);
            gpas.Add(os.Translate(kernel, v)!.Value);
        }
        var engine = new RecoveryEngine(os.Vm);
        engine.Protect(gpas, PageCategory.KernelLike);
        engine.Unrecoverable = os.MemoryFailure;
        return (kernel, engine);
    }

    // Page-cache pages are clean pages with a disk location (their file's offset on the guest's disk): recovery
    // refills one an error hits from its file, as the policy says for clean pages with a disk copy.
    private static void ProtectPageCache(PageCache cache, RecoveryEngine engine)
    {
        engine.UseDiskFile(cache.Disk);
        cache.CleanPages = (pages, offsets) =>
        {
            var at = new Dictionary<GuestPage, long>(pages.Length);
            for (int i = 0; i < pages.Length; i++) at[pages[i]] = offsets[i];
            engine.Protect(pages, PageCategory.CleanWithDiskCopy, g => at[g]);
        };
    }

    // Injects one error as the spec says, reports it to the VM's recovery engine, and records both.
    private void Inject(InjectionSpec j)
    {
        int i = Scheduler.Vms.ToList().FindIndex(v => v.Vm.Name == j.Vm);
        ScheduledVm v = Scheduler.Vms[i];
        (GuestProcess kernel, RecoveryEngine engine) = _recovery[i];
        GuestProcess victim = j.Target == "kernel" ? kernel : _workloads[i].Process;
        if (j.Target == "user" && _workloads[i] is IApplicationWorkload { RefusesUnprotectedErrors: { } refused })
        {
            // An application may hold native pointers into its pages: it says whether a contained (zeroed) page
            // may be put under them.
            Missed($"refused: {refused}");
            return;
        }
        void Missed(string why) =>
            Record(new RunEvent { Tick = _tick, Kind = RunEventKind.Injection, Vm = j.Vm, Missed = true, Detail = $"{j.Kind} into {j.Target}: {why}" });
        var resident = Enumerable.Range(0, (int)victim.VirtualPages).Select(p => (ulong)p).Where(victim.IsResident).ToList();
        if (resident.Count == 0)
        {
            Missed($"no resident page to hit{(victim.Killed ? $" (process '{victim.Name}' was ended)" : "")}");
            return;
        }
        GuestPage page = v.Os.Translate(victim, resident[_rng.Next(resident.Count)])!.Value;
        ErrorKind kind = InjectionSpec.KindOf(j.Kind);
        (int offset, byte[] mask) = MemoryErrorInjector.Pattern(kind, Arena.PageSize, _rng);
        if (v.Vm.Translate(page) is not HostFrame || MemoryErrorInjector.IntoPage(v.Vm, page, offset, mask) is not HostFrame frame)
        {
            Missed($"{page} has no frame the error could hit ({v.Vm.StateOf(page)})");
            return;
        }
        Record(new RunEvent { Tick = _tick, Kind = RunEventKind.Injection, Vm = j.Vm,
            Detail = $"{kind} in {j.Target} {page} ({frame}) of process '{victim.Name}'" });
        ErrorReport r = engine.Report(frame);
        Record(new RunEvent { Tick = _tick, Kind = RunEventKind.Recovery, Vm = j.Vm,
            Detail = r.Outcome == ErrorOutcome.Contained ? $"contained: process '{victim.Name}' terminated" : $"{r.Outcome}: {page} rebuilt bit-exact" });
    }

    // The workload's kind starts it: by default in a process named after the kind with as many virtual pages as
    // the VM (an application in the run of guest pages its heap reserves), with the run's temporary directory.
    private static IWorkload CreateWorkload(GuestOperatingSystem os, VmSpec spec, Scenario scenario, string tempDirectory)
    {
        IWorkloadKind kind = WorkloadKinds.Find(spec.Workload.Kind)
                             ?? throw new ScenarioException("scenario", $"vms[{spec.Name}].workload.kind", WorkloadKinds.Unknown(spec.Workload.Kind));
        return kind.Start(spec.Workload, os, scenario.WorkloadContextOf(spec, tempDirectory));
    }

    public void Dispose()
    {
        // Workloads first (a trace's open file; an application frees its heap before the VM it lives in goes).
        foreach (IWorkload w in _workloads) (w as IDisposable)?.Dispose();
        _metrics?.Dispose();
        foreach (ScheduledVm v in Scheduler?.Vms ?? [])
        {
            v.Os.Dispose();
            v.Vm.Dispose();
        }
        _unscheduled?.Dispose();
        Arena?.Dispose();
    }
}
