// Translates what the mechanisms did in a step into the run's events (balloon steps, frame moves, sharing,
// host swap, decisions, samples) and its metrics, in causal order.
using System.Diagnostics;
using PageLab.Core.Faults;
using PageLab.Core.Host;
using PageLab.Core.Scheduling;
using PageLab.Lab.Observation;

namespace PageLab.Lab.Scenarios;

public sealed partial class ScenarioRunner
{
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
}
