// Memory condition on real ballooning: it turns low before the guest's free memory does, recovers on
// deflate, drives a cache better than guest free memory, and notifies exactly as PSI triggers would.
using PageLab.Core.Condition;
using PageLab.Core.GuestOs;
using PageLab.Core.Scheduling;
using PageLab.Lab.Experiments;

namespace PageLab.Tests;

public class ConditionTests
{
    [Fact]
    public void The_condition_turns_low_before_guest_free_memory_when_the_balloon_inflates_and_recovers_on_deflate()
    {
        using var h = new TestHost(2200);
        ScheduledVm vm = h.Vm("vm", 2048, 2048);
        h.Vm("other", 256, 0);
        GuestProcess app = vm.Os.Spawn("app", 2048);
        for (ulong v = 0; v < 300; v++) app.Page(v)[0] = 1;
        var condition = new ConditionService(h.Scheduler, windowTicks: 10);
        MemoryLevel guest = MemoryLevel.Plenty;
        int tick = 0;
        void Advance()
        {
            h.Scheduler.Step();
            condition.Tick(++tick);
            guest = condition.GuestOsLevel("vm", guest);
        }
        for (int i = 0; i < 5; i++) Advance();
        Assert.Equal(MemoryLevel.Plenty, condition.Query("vm").Level);

        vm.AllocationPages = 500;                                           // the host wants 1548 pages back
        int hypervisorLow = -1, guestLow = -1;
        for (int i = 0; i < 60 && guestLow < 0; i++)
        {
            Advance();
            if (hypervisorLow < 0 && condition.Query("vm").Level != MemoryLevel.Plenty) hypervisorLow = tick;
            if (guestLow < 0 && guest != MemoryLevel.Plenty) guestLow = tick;
        }
        Assert.True(hypervisorLow > 0 && guestLow > 0, $"hypervisor low at {hypervisorLow}, guest low at {guestLow}");
        Assert.True(hypervisorLow < guestLow, $"hypervisor low at tick {hypervisorLow}, guest OS only at {guestLow}");
        Assert.True(vm.Backend.ActualPages > 1000, "the balloon really inflated");

        vm.AllocationPages = 2048;                                          // deflate
        for (int i = 0; i < 40; i++) Advance();
        Assert.Equal(MemoryLevel.Plenty, condition.Query("vm").Level);
        Assert.Equal(0UL, vm.Backend.ActualPages);
        Assert.Empty(h.Accounting());
    }

    [Fact]
    public void A_cache_driven_by_the_hypervisors_condition_pages_less_and_hits_more_than_one_driven_by_guest_free_memory()
    {
        ConditionExperimentResult hv = ConditionExperiment.Run(ConditionSource.Hypervisor);
        ConditionExperimentResult os = ConditionExperiment.Run(ConditionSource.GuestOs);

        Assert.True(hv.CachePageOuts * 10 < os.CachePageOuts, $"cache page-outs: hypervisor {hv.CachePageOuts}, guest OS {os.CachePageOuts}");
        Assert.True(hv.GuestSwapOuts * 10 < os.GuestSwapOuts, $"guest swap-outs: hypervisor {hv.GuestSwapOuts}, guest OS {os.GuestSwapOuts}");
        Assert.True(hv.HitRate > os.HitRate + 0.01, $"hit rate: hypervisor {hv.HitRate:P1}, guest OS {os.HitRate:P1}");
    }

    [Fact]
    public void A_trigger_fires_once_per_window_while_stalled_loses_nothing_in_a_burst_and_never_waits_for_its_reader()
    {
        using var h = new TestHost(1100);
        ScheduledVm vm = h.Vm("vm", 1024, 200);                             // squeezed: touching 600 pages pages
        h.Vm("other", 256, 0);
        h.Settle();
        GuestProcess app = vm.Os.Spawn("app", 1024);
        var condition = new ConditionService(h.Scheduler);
        ConditionSubscription sub = condition.Subscribe("vm", new ConditionTrigger(StallMs: 100, WindowMs: 500));
        ConditionSubscription neverRead = condition.Subscribe("vm", new ConditionTrigger(StallMs: 100, WindowMs: 500));
        var stalled = new List<int>();
        int tick = 0;
        void Run(int ticks, bool busy)
        {
            for (int i = 0; i < ticks; i++)
            {
                ulong before = vm.Os.Stats.MajorFaults + vm.HostPressureStalls;
                if (busy) for (ulong v = 0; v < 600; v++) app.Page(v)[0]++;
                h.Scheduler.Step();
                condition.Tick(++tick);
                if (vm.Os.Stats.MajorFaults + vm.HostPressureStalls > before) stalled.Add(tick);
            }
        }

        Run(200, busy: true);                     // stalled throughout: fires at the 10th stalled tick, then every 50,
                                                  // and once more at 210 (the trailing window still holds 161..200)
        Run(100, busy: false);                    // quiet: nothing
        Run(15, busy: true);                      // a burst long enough to pass 100 ms once

        Assert.Equal(Enumerable.Range(1, 200).Concat(Enumerable.Range(301, 15)), stalled);
        var got = new List<ConditionNotification>();
        while (sub.Notifications.TryRead(out ConditionNotification? n)) got.Add(n);
        Assert.Equal([10, 60, 110, 160, 210, 310], got.Select(n => n.Tick));
        Assert.Equal(6, neverRead.Delivered);                               // queued for the reader that never came
        Assert.All(got, n => Assert.NotEqual(MemoryLevel.Plenty, n.Condition.Level));
    }

    [Theory]
    [InlineData(100, 50, "window must be 500..10000 ms, got 100 ms")]
    [InlineData(20_000, 50, "window must be 500..10000 ms, got 20000 ms")]
    [InlineData(1000, -10, "stall must be 1..1000 ms (the window), got -10 ms")]
    [InlineData(1000, 2000, "stall must be 1..1000 ms (the window), got 2000 ms")]
    [InlineData(1000, 15, "multiples of the 10 ms tick")]
    public void A_bad_subscription_is_refused_with_its_values(int windowMs, int stallMs, string expected)
    {
        using var h = new TestHost(600);
        h.Vm("vm", 512, 300);
        var condition = new ConditionService(h.Scheduler);
        var e = Assert.ThrowsAny<ArgumentException>(() => condition.Subscribe("vm", new ConditionTrigger(stallMs, windowMs)));
        Assert.Contains(expected, e.Message);
        var unknown = Assert.Throws<ArgumentException>(() => condition.Subscribe("nope", new ConditionTrigger(100, 1000)));
        Assert.Contains("no VM named 'nope'", unknown.Message);
    }
}
