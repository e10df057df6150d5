// Runs a scenario, tick by tick: boot inflates the balloons, then every tick runs the workloads, injects
// the scenario's errors, steps the balloons, ends sampling periods and snapshots every VM's memory.
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

public sealed partial class ScenarioRunner : IDisposable
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
}
