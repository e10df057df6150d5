// The hypercall side of memory condition: guest applications query their VM's condition, or
// subscribe to PSI-style triggers (stall time within a window) and level changes. The hypervisor
// side never blocks on a subscriber: notifications go into a channel the subscriber drains.
using System.Threading.Channels;
using PageLab.Core.Scheduling;

namespace PageLab.Core.Condition;

/// <summary>A PSI-like trigger: notify when the VM stalled at least <paramref name="StallMs"/> within
/// the trailing <paramref name="WindowMs"/>, at most once per window.</summary>
public sealed record ConditionTrigger(int StallMs, int WindowMs)
{
    public const int MinWindowMs = 500, MaxWindowMs = 10_000;

    public override string ToString() => $"some {StallMs}ms {WindowMs}ms";
}

public sealed record ConditionNotification(int Tick, ConditionTrigger Trigger, MemoryConditionReport Condition);

public sealed class ConditionSubscription
{
    internal ConditionSubscription(string vm, ConditionTrigger trigger, Channel<ConditionNotification> channel)
    {
        Vm = vm;
        Trigger = trigger;
        Channel = channel;
    }

    public string Vm { get; }
    public ConditionTrigger Trigger { get; }
    internal Channel<ConditionNotification> Channel { get; }
    internal int LastNotifiedTick { get; set; } = int.MinValue / 2;
    public ChannelReader<ConditionNotification> Notifications => Channel.Reader;
    public long Delivered { get; internal set; }
}

public sealed class ConditionService
{
    /// <summary>Simulated time per scheduler tick, so PSI-style triggers read in milliseconds.</summary>
    public const int TickMs = 10;

    private readonly MemoryScheduler _scheduler;
    private readonly Dictionary<string, VmState> _vms = new();
    private readonly Lock _gate = new();

    private sealed class VmState(ScheduledVm vm)
    {
        public ScheduledVm Vm { get; } = vm;
        public MemoryLevel Level;
        public readonly Queue<(bool Stalled, ulong BalloonPageOuts)> History = new();
        public ulong LastMajor, LastStalls, LastPageOuts;
        public MemoryConditionReport? Latest;
        public readonly List<ConditionSubscription> Subscriptions = new();
    }

    public ConditionService(MemoryScheduler scheduler, LevelThresholds? thresholds = null, int windowTicks = 50)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(windowTicks, 1);
        _scheduler = scheduler;
        Thresholds = thresholds ?? new LevelThresholds();
        Thresholds.Validate();
        WindowTicks = windowTicks;
        foreach (ScheduledVm v in scheduler.Vms) _vms[v.Vm.Name] = new VmState(v);
    }

    public LevelThresholds Thresholds { get; }
    /// <summary>The window over which page-out rates and stall shares of queries are taken.</summary>
    public int WindowTicks { get; }

    /// <summary>The hypercall: this VM's memory condition as of the last tick.</summary>
    public MemoryConditionReport Query(string vm)
    {
        lock (_gate) return State(vm).Latest ?? Compute(State(vm), 0);
    }

    /// <summary>What the guest OS alone can say: its free pages, judged by the same thresholds
    /// (without hysteresis memory of its own, as a guest reading its free count would).</summary>
    public MemoryLevel GuestOsLevel(string vm, MemoryLevel previous)
    {
        ScheduledVm v = State(vm).Vm;
        double free = (double)v.Os.FreePages / v.Vm.PageCount;
        return Thresholds.Next(previous, free, 0);
    }

    /// <summary><see cref="GuestOsLevel"/> as a report: the guest's free pages are all it knows to be available,
    /// out of its nominal size.</summary>
    public MemoryConditionReport GuestOsReport(string vm, MemoryLevel previous)
    {
        ScheduledVm v = State(vm).Vm;
        ulong free = v.Os.FreePages;
        return new MemoryConditionReport(0, GuestOsLevel(vm, previous), free, free, v.Vm.PageCount, v.Vm.PageCount, 0, 0, 0, 0, 0, 0);
    }

    public ConditionSubscription Subscribe(string vm, ConditionTrigger trigger)
    {
        ArgumentNullException.ThrowIfNull(trigger);
        if (trigger.WindowMs is < ConditionTrigger.MinWindowMs or > ConditionTrigger.MaxWindowMs)
            throw new ArgumentOutOfRangeException(nameof(trigger), trigger.WindowMs,
                $"trigger '{trigger}': window must be {ConditionTrigger.MinWindowMs}..{ConditionTrigger.MaxWindowMs} ms, got {trigger.WindowMs} ms");
        if (trigger.StallMs <= 0 || trigger.StallMs > trigger.WindowMs)
            throw new ArgumentOutOfRangeException(nameof(trigger), trigger.StallMs,
                $"trigger '{trigger}': stall must be 1..{trigger.WindowMs} ms (the window), got {trigger.StallMs} ms");
        if (trigger.WindowMs % TickMs != 0 || trigger.StallMs % TickMs != 0)
            throw new ArgumentException($"trigger '{trigger}': stall and window must be multiples of the {TickMs} ms tick", nameof(trigger));
        lock (_gate)
        {
            var sub = new ConditionSubscription(vm, trigger, Channel.CreateUnbounded<ConditionNotification>(
                new UnboundedChannelOptions { SingleReader = true, SingleWriter = true }));
            State(vm).Subscriptions.Add(sub);
            return sub;
        }
    }

    /// <summary>Called once per scheduler tick: records each VM's stall, recomputes its condition and
    /// fires due triggers (a non-blocking write per notification).</summary>
    public void Tick(int tick)
    {
        lock (_gate)
            foreach (VmState s in _vms.Values)
            {
                var stats = s.Vm.Os.Stats;
                ulong pageOuts = s.Vm.Balloon.PageOutsSeen;
                bool stalled = stats.MajorFaults > s.LastMajor || s.Vm.HostPressureStalls > s.LastStalls || pageOuts > s.LastPageOuts;
                s.History.Enqueue((stalled, pageOuts - s.LastPageOuts));
                (s.LastMajor, s.LastStalls, s.LastPageOuts) = (stats.MajorFaults, s.Vm.HostPressureStalls, pageOuts);
                int keep = Math.Max(WindowTicks, ConditionTrigger.MaxWindowMs / TickMs);
                while (s.History.Count > keep) s.History.Dequeue();
                s.Latest = Compute(s, tick);
                foreach (ConditionSubscription sub in s.Subscriptions)
                {
                    int window = sub.Trigger.WindowMs / TickMs;
                    if (tick - sub.LastNotifiedTick < window) continue;            // at most once per window
                    int stalledTicks = s.History.Reverse().Take(window).Count(h => h.Stalled);
                    if (stalledTicks * TickMs < sub.Trigger.StallMs) continue;
                    sub.LastNotifiedTick = tick;
                    if (sub.Channel.Writer.TryWrite(new ConditionNotification(tick, sub.Trigger, s.Latest))) sub.Delivered++;
                }
            }
    }

    private MemoryConditionReport Compute(VmState s, int tick)
    {
        ScheduledVm v = s.Vm;
        ulong free = v.Os.FreePages, freeBacked = v.Os.FreeBackedPages();
        long mapped = v.Vm.HeldFrames - v.Vm.PoolCount;
        // Free pages with a frame are usable as they are; free pages without one only as far as the host
        // will back them; and what the balloon is still to take is already gone. The host's room is the
        // engine's frame limit, not the allocation: a work-conserving host lends a VM its part of the free
        // host pages (MemoryScheduler.SetNativeLimits), and while it does, the VM's free pages are usable.
        ulong hostRoom = (ulong)Math.Max(0, (long)v.FrameLimitPages - mapped);
        ulong balloonActual = v.Backend.ActualPages;
        ulong pending = v.BalloonTargetPages > balloonActual ? v.BalloonTargetPages - balloonActual : 0;
        ulong usable = freeBacked + Math.Min(free - freeBacked, hostRoom);
        ulong trueAvailable = usable > pending ? usable - pending : 0;
        var recent = s.History.Reverse().Take(WindowTicks).ToList();
        ulong pageOuts = recent.Aggregate(0UL, (a, h) => a + h.BalloonPageOuts);
        double stallShare = recent.Count == 0 ? 0 : (double)recent.Count(h => h.Stalled) / recent.Count;
        // Judge against the memory the VM really has (its allocation; the balloon holds the rest), not
        // the guest's nominal size: the guest OS cannot make that distinction, the hypervisor can.
        ulong effective = Math.Max(1, Math.Min(v.Vm.PageCount, v.AllocationPages));
        s.Level = Thresholds.Next(s.Level, (double)trueAvailable / effective, pageOuts);
        return new MemoryConditionReport(tick, s.Level, trueAvailable, free, v.Vm.PageCount, effective, v.BalloonTargetPages, balloonActual,
            pageOuts, stallShare, (ulong)Math.Round(v.WorkingSet.ActiveFraction * Math.Max(0, mapped)), _scheduler.Arena.Counts.Free);
    }

    private VmState State(string vm) =>
        _vms.TryGetValue(vm, out VmState? s) ? s : throw new ArgumentException($"no VM named '{vm}' (VMs: {string.Join(", ", _vms.Keys)})", nameof(vm));
}
