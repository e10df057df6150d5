// Runs a scenario: builds the arena, VMs, guest OSes, balloon applications and the scheduler, then
// advances time tick by tick (workloads, balloon steps, sampling periods) and reports every VM's memory.
using PageLab.Core.Balloon;
using PageLab.Core.Condition;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Scheduling;

namespace PageLab.Core.Scenarios;

/// <summary>One VM's memory at one tick (a superset of the virtio-balloon statistics).</summary>
public sealed record VmSnapshot(
    string Name, ulong Pages, ulong AllocationPages, long HeldFrames, ulong BalloonTarget, ulong BalloonActual,
    ulong ActiveEstimatePages, ulong WorkingSetPages, ulong FreePages, ulong AvailablePages,
    ulong SwapIns, ulong SwapOuts, ulong MajorFaults, ulong MinorFaults, ulong DemandFaults, ulong HostStalls,
    ulong BalloonPageOuts, ulong OomKills, MemoryLevel Condition, ulong TrueAvailablePages);

public sealed record TickSnapshot(int Tick, IReadOnlyList<VmSnapshot> Vms, long FreeFrames, long TransferredFrames, StepReport Step);

public sealed class ScenarioRunner : IDisposable
{
    private readonly List<IWorkload> _workloads = new();
    private readonly Random _rng;
    private int _tick;
    private GuestVm? _unscheduled; // created but not yet owned by the scheduler (for cleanup on failure)

    public ScenarioRunner(Scenario scenario, string? swapDirectory = null)
    {
        scenario.Validate();
        Scenario = scenario;
        _rng = new Random(scenario.Seed);
        const uint pool = 64;
        // Host memory for guests, plus room for every demand pool and for frames in flight in a step.
        uint frames = checked((uint)scenario.HostPages + pool * (uint)scenario.Vms.Count + (uint)scenario.BatchPages);
        Arena = HostArena.Create(frames, $"pagelab-{scenario.Name}");
        Scheduler = new MemoryScheduler(Arena, new SchedulerOptions
        {
            HostPages = scenario.HostPages, IdleTax = scenario.IdleTax, BatchPages = scenario.BatchPages,
            Adaptive = scenario.Adaptive, Seed = scenario.Seed,
        });
        try
        {
            foreach (VmSpec spec in scenario.Vms)
            {
                GuestVm vm = GuestVm.Create(Arena, spec.Name, spec.Pages, pool);
                _unscheduled = vm;
                var os = new GuestOperatingSystem(vm, new GuestOsOptions { SwapDirectory = swapDirectory });
                var app = new BalloonApplication(os, vm.Id);
                Scheduler.Add(os, app, spec.Shares, spec.MinPages, spec.MaxPages ?? spec.Pages, scenario.InitialOf(spec));
                _unscheduled = null;
                _workloads.Add(MakeWorkload(os, spec.Workload, scenario.Ticks));
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        Condition = new ConditionService(Scheduler);
    }

    public Scenario Scenario { get; }
    public HostArena Arena { get; }
    public MemoryScheduler Scheduler { get; }
    /// <summary>The hypercall service guest applications query for their VM's memory condition.</summary>
    public ConditionService Condition { get; }
    public int Tick => _tick;

    /// <summary>Inflates every balloon to its starting target so each VM fits its initial allocation.</summary>
    public void Boot()
    {
        for (int i = 0; i < 10_000; i++)
        {
            StepReport r = Scheduler.Step();
            if (r.Inflated.Values.Sum() == 0 && r.Deflated.Values.Sum() == 0) break;
        }
        Scheduler.SamplePeriod();
    }

    /// <summary>Advances one tick: every workload runs, every balloon takes one step, and at the end of
    /// a sampling period the scheduler re-estimates working sets and reallocates.</summary>
    public TickSnapshot Advance()
    {
        _tick++;
        for (int i = 0; i < _workloads.Count; i++) _workloads[i].Step(_tick, _rng);
        if (_tick % Scenario.SamplePeriodTicks == 0) Scheduler.SamplePeriod();
        StepReport step = Scheduler.Step();
        Condition.Tick(_tick);
        return new TickSnapshot(_tick, Snapshot(), Arena.Counts.Free, Scheduler.TransferredFrames, step);
    }

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
            long held = v.Vm.HeldFrames;
            ulong active = (ulong)Math.Round(v.WorkingSet.ActiveFraction * Math.Max(0, held - v.Vm.PoolCount));
            MemoryConditionReport c = Condition.Query(v.Vm.Name);
            list.Add(new VmSnapshot(v.Vm.Name, v.Vm.PageCount, v.AllocationPages, held, v.BalloonTargetPages,
                v.Backend.ActualPages, active, _workloads[i].WorkingSetPages(_tick), s.FreePages, s.FreePages,
                s.SwapIns, s.SwapOuts, s.MajorFaults, s.MinorFaults, v.Vm.Counters.DemandFaults, v.HostPressureStalls,
                v.Balloon.PageOutsSeen, s.OomKills, c.Level, c.TrueAvailablePages));
        }
        return list;
    }

    /// <summary>Broken accounting rules (empty when every frame is where it should be).</summary>
    public List<string> CheckAccounting() => FrameAccounting.Check(Arena, Scheduler.Vms.Select(v => v.Vm).ToList());

    private static IWorkload MakeWorkload(GuestOperatingSystem os, WorkloadSpec w, int ticks)
    {
        GuestProcess p = os.Spawn(w.Kind, os.Vm.PageCount);
        return w.Kind switch
        {
            "idle" => new IdleWorkload(p, w.Pages, w.TouchesPerTick),
            "active" => new RandomTouchWorkload(p, _ => w.Pages, w.TouchesPerTick),
            _ => new RandomTouchWorkload(p, t => w.Pages + (ulong)((double)(w.EndPages!.Value - w.Pages) * Math.Min(1, (double)t / ticks)), w.TouchesPerTick),
        };
    }

    public void Dispose()
    {
        foreach (ScheduledVm v in Scheduler?.Vms ?? [])
        {
            v.Os.Dispose();
            v.Vm.Dispose();
        }
        _unscheduled?.Dispose();
        Arena?.Dispose();
    }
}
