// The frame limit the scheduler gives the fault engine, on real memory: native code touching guest memory
// (an application's heap, as SQLite's) grows a work-conserving VM into host pages no VM holds before the
// engine host-swaps the VM's own pages, and the VMs together never take more than the host has.
using PageLab.Core;
using PageLab.Core.Balloon;
using PageLab.Core.Condition;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Scheduling;
using Xunit;

namespace PageLab.Tests;

public class SchedulerNativeLimitTests(ITestOutputHelper output)
{
    private static ScheduledVm Add(MemoryScheduler s, TestArena t, string name, ulong pages, ulong allocation, out GuestOperatingSystem os)
    {
        GuestVm vm = t.Vm(name, pages, pool: 64);
        os = new GuestOperatingSystem(vm);
        return s.Add(os, new BalloonApplication(os, vm.Id), 1000, 0, pages, allocation);
    }

    // Writes every page of a pinned run through the guest view: each first touch is a real fault the C
    // handler resolves without the guest OS model (as SQLite's loads and stores into its heap are).
    private static void TouchRun(GuestOperatingSystem os, GuestProcess run)
    {
        for (ulong v = 0; v < run.VirtualPages; v++) os.Vm.Page(new GuestPage(run.RunFirst!.Value + v))[0] = (byte)(v | 1);
    }

    [Fact]
    public void Native_faults_grow_a_vm_into_free_host_pages_before_any_host_swap_and_never_past_the_host()
    {
        using var t = new TestArena(4096);
        var s = new MemoryScheduler(t.Arena, new SchedulerOptions { HostPages = 3072, Policy = new StaticPolicy(), BatchPages = 64 });
        var osList = new List<GuestOperatingSystem>();
        try
        {
            // Before the first step, as a workload's setup runs (SQLite loading its database).
            ScheduledVm a = Add(s, t, "a", 2048, 1024, out GuestOperatingSystem osA);
            osList.Add(osA);
            GuestProcess runA = osA.SpawnPinnedRun("app", 1500)!;
            TouchRun(osA, runA);
            output.WriteLine($"a: held {a.Vm.HeldFrames}, host swap-outs {a.Vm.Counters.HostSwapOuts}, host free {s.FreeHostPages}");
            Assert.Equal(0UL, a.Vm.Counters.HostSwapOuts);                  // the host had 3072 pages and no other VM
            Assert.True(a.Vm.HeldFrames >= 1500, $"a holds {a.Vm.HeldFrames} frames");

            // A second VM arrives: it may take only what the host still has, whatever its own ceiling says.
            ScheduledVm b = Add(s, t, "b", 2048, 1024, out GuestOperatingSystem osB);
            osList.Add(osB);
            s.Step();
            GuestProcess runB = osB.SpawnPinnedRun("app", 2000)!;
            TouchRun(osB, runB);
            output.WriteLine($"b: held {b.Vm.HeldFrames}, host swap-outs {b.Vm.Counters.HostSwapOuts}, host free {s.FreeHostPages}");
            Assert.True(s.FreeHostPages >= 0, $"the VMs hold {3072 - s.FreeHostPages} pages of a 3072-page host");
            Assert.True(b.Vm.Counters.HostSwapOuts > 0);                     // b met the host's end, not a's pages
            Assert.Equal(0UL, a.Vm.Counters.HostSwapOuts);

            // Steps later a still touches its whole run without a host swap: the pages it was lent stay its own
            // until a VM below its allocation calls them back.
            for (int i = 0; i < 3; i++) s.Step();
            TouchRun(osA, runA);
            Assert.Equal(0UL, a.Vm.Counters.HostSwapOuts);
            Assert.Empty(FrameAccounting.Check(t.Arena, s.Vms.Select(v => v.Vm).ToList()));
        }
        finally
        {
            foreach (GuestOperatingSystem os in osList) os.Dispose();
        }
    }

    // The condition reports the room the host really gives: a VM past its allocation on pages the host lends it
    // has its free guest pages available while the host has free pages, and not once another VM took them.
    [Fact]
    public void The_condition_counts_the_host_pages_a_vm_may_still_take_not_its_allocation()
    {
        using var t = new TestArena(4096);
        var s = new MemoryScheduler(t.Arena, new SchedulerOptions { HostPages = 3072, Policy = new StaticPolicy(), BatchPages = 64 });
        var osList = new List<GuestOperatingSystem>();
        try
        {
            ScheduledVm a = Add(s, t, "a", 2048, 1024, out GuestOperatingSystem osA);
            osList.Add(osA);
            ScheduledVm b = Add(s, t, "b", 2048, 1024, out GuestOperatingSystem osB);
            osList.Add(osB);
            TouchRun(osA, osA.SpawnPinnedRun("app", 1500)!);
            var condition = new ConditionService(s);
            s.Step();
            condition.Tick(1);
            MemoryConditionReport lent = condition.Query("a");
            output.WriteLine($"a lent: {lent}; host free {s.FreeHostPages}");
            Assert.True(a.Vm.HeldFrames > (long)a.AllocationPages);           // past its allocation, on lent pages
            Assert.Equal(MemoryLevel.Plenty, lent.Level);                      // the host would back its 548 free pages

            GuestProcess runB = osB.SpawnPinnedRun("app", 2000)!;
            for (int i = 0; i < 6; i++)                                         // b takes what the host has left
            {
                TouchRun(osB, runB);
                s.Step();
            }
            condition.Tick(2);
            MemoryConditionReport taken = condition.Query("a");
            output.WriteLine($"a after b: {taken}; host free {s.FreeHostPages}");
            Assert.NotEqual(MemoryLevel.Plenty, taken.Level);
            Assert.True(taken.TrueAvailablePages < lent.TrueAvailablePages / 4, $"{taken.TrueAvailablePages} of {lent.TrueAvailablePages} pages still available");
        }
        finally
        {
            foreach (GuestOperatingSystem os in osList) os.Dispose();
        }
    }
}
