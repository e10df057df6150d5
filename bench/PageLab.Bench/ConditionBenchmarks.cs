// Why: the memory-condition hypercall's query latency, and how long a notification takes from the
// scheduler tick that fires it to a subscriber that is waiting on its channel.
using BenchmarkDotNet.Attributes;
using PageLab.Core.Balloon;
using PageLab.Core.Condition;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Scheduling;

namespace PageLab.Bench;

[MemoryDiagnoser]
[MedianColumn]
public class ConditionBenchmarks
{
    private HostArena _arena = null!;
    private GuestVm _vm = null!;
    private GuestOperatingSystem _os = null!;
    private ConditionService _condition = null!;
    private ConditionSubscription _sub = null!;
    private ScheduledVm _scheduled = null!;
    private int _tick;
    private MemoryLevel _guestLevel = MemoryLevel.Plenty;

    [GlobalSetup]
    public void Setup()
    {
        _arena = HostArena.Create(2048, "pagelab-bench-condition");
        var scheduler = new MemoryScheduler(_arena, new SchedulerOptions { HostPages = 1024, Policy = new StaticPolicy(), WorkConserving = false });
        _vm = GuestVm.Create(_arena, "vm", 1024, 64);
        _os = new GuestOperatingSystem(_vm);
        _scheduled = scheduler.Add(_os, new BalloonApplication(_os, _vm.Id), 1000, 0, 1024, 1024);
        _condition = new ConditionService(scheduler);
        _sub = _condition.Subscribe("vm", new ConditionTrigger(StallMs: 10, WindowMs: 500));
        _condition.Tick(++_tick);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _os.Dispose();
        _vm.Dispose();
        _arena.Dispose();
    }

    /// <summary>Baseline: what the guest OS alone can tell, by the same VM look-up and thresholds as the
    /// hypercall: its free count over its total, judged from the previous level
    /// (<see cref="ConditionService.GuestOsLevel"/>). Each call takes the last call's result as input and
    /// stores its own, so the JIT can neither hoist nor drop it. (A bare read of the free-count field,
    /// the previous baseline, was inlined to nothing and measured 0 ns.)</summary>
    [Benchmark(Baseline = true, Description = "guest OS level from its free count")]
    public MemoryLevel GuestOsLevel() => _guestLevel = _condition.GuestOsLevel("vm", _guestLevel);

    [Benchmark(Description = "condition query (hypercall)")]
    public MemoryLevel Query() => _condition.Query("vm").Level;

    /// <summary>One tick that fires the trigger, and the subscriber's read of the notification. The
    /// subscription's window is reset each time so every tick fires.</summary>
    [Benchmark(Description = "tick that fires + subscriber read")]
    public int Notify()
    {
        _tick += 50;                                      // past the window: the trigger may fire again
        _scheduled.HostPressureStalls++;                  // this tick stalled
        _condition.Tick(_tick);
        return _sub.Notifications.TryRead(out ConditionNotification? n) ? n.Tick : throw new InvalidOperationException("no notification");
    }
}
