// Balloon progress is what the host gets back, on real memory: a balloon its guest pages out as fast as it
// inflates gives nothing and the scheduler host-swaps (as ESX does); one that brings its VM down keeps it off.
using PageLab.Core;
using PageLab.Core.Balloon;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Scheduling;
using Xunit;

namespace PageLab.Tests;

public class BalloonProgressTests(ITestOutputHelper output)
{
    private const ulong GuestPages = 1024, Allocation = 600;

    private static MemoryScheduler Scheduler(TestArena t, Reclamation reclamation) =>
        new(t.Arena, new SchedulerOptions
        {
            HostPages = 1536, Policy = new StaticPolicy(), WorkConserving = false, BatchPages = 64, Reclamation = reclamation,
        });

    // Writes every page of a pinned run through the guest view (real faults the C handler resolves, as an
    // application's heap is touched), each page with its own pattern.
    private static void WriteRun(GuestOperatingSystem os, GuestProcess run)
    {
        for (ulong v = 0; v < run.VirtualPages; v++) os.Vm.Page(new GuestPage(run.RunFirst!.Value + v))[0] = (byte)(v | 1);
    }

    private static List<string> WrongPages(GuestOperatingSystem os, GuestProcess run)
    {
        var wrong = new List<string>();
        for (ulong v = 0; v < run.VirtualPages; v++)
            if (os.Vm.Page(new GuestPage(run.RunFirst!.Value + v))[0] != (byte)(v | 1)) wrong.Add($"vpn {v}");
        return wrong;
    }

    // The VM holds 700 pinned pages (an application's heap, as SQLite's run) against an allocation of 600: its
    // balloon (target 424) finds no page the guest can give. Each step it reserves a batch, the guest pages
    // the batch's own pages out again to back the next ones, and one page of the batch is reported; the frame
    // the host takes is the frame the guest got back, urgently, for the next reservation. Counted as progress
    // (inflated 1 a step), that kept host swap off for ever with the VM 100 frames over.
    [Fact]
    public void A_balloon_the_guest_pages_out_as_fast_as_it_inflates_is_no_progress_and_host_swap_brings_the_vm_down()
    {
        using var t = new TestArena(2048);
        MemoryScheduler s = Scheduler(t, Reclamation.Balloon | Reclamation.HostSwap);
        GuestVm vm = t.Vm("db", GuestPages, pool: 64);
        using var os = new GuestOperatingSystem(vm);
        GuestProcess run = os.SpawnPinnedRun("app", 700)!;
        WriteRun(os, run);                                       // lent frames it held before its allocation dropped
        ScheduledVm v = s.Add(os, new BalloonApplication(os, vm.Id), 1000, 0, GuestPages, Allocation);
        Assert.True(v.ChargedFrames >= 700, $"db holds {v.ChargedFrames} frames");

        long inflatedTotal = 0, swapped = 0;
        for (int i = 0; i < 40; i++)
        {
            StepReport r = s.Step();
            inflatedTotal += r.Inflated.GetValueOrDefault("db");
            swapped += r.HostSwapped.GetValueOrDefault("db");
            output.WriteLine($"step {i}: inflated {r.Inflated.GetValueOrDefault("db")}, host-swapped {r.HostSwapped.GetValueOrDefault("db")}, " +
                             $"charged {v.ChargedFrames}, ceiling {v.CeilingPages}, balloon {v.Backend.ActualPages}/{v.BalloonTargetPages}, " +
                             $"guest page-outs {os.Stats.SwapOuts}");
        }
        Assert.True(inflatedTotal > 0, "the balloon reported no page at all: the churn this test is about did not happen");
        Assert.True(os.Stats.SwapOuts > 0, "the guest paged no balloon page out");
        Assert.True(swapped > 0, $"the balloon 'inflated' {inflatedTotal} pages yet the VM stayed at {v.ChargedFrames} frames over its " +
                                 $"ceiling of {v.CeilingPages}, and host swap never ran");
        Assert.True(v.ChargedFrames <= (long)v.CeilingPages, $"db holds {v.ChargedFrames} frames, its ceiling is {v.CeilingPages}");
        Assert.True(vm.Counters.HostSwapOuts >= (ulong)swapped);
        // The host's swap kept the application's bytes: each page faults back with what was written.
        Assert.Empty(WrongPages(os, run));
        Assert.Empty(FrameAccounting.Check(t.Arena, [vm]));
    }

    // The other side: a guest with free backed pages gives them to its balloon, the VM's frames come down step
    // by step, and host swap never runs although the VM is over its ceiling for several steps.
    [Fact]
    public void A_balloon_that_brings_the_vm_down_keeps_host_swap_off()
    {
        using var t = new TestArena(2048);
        MemoryScheduler s = Scheduler(t, Reclamation.Balloon | Reclamation.HostSwap);
        GuestVm vm = t.Vm("web", GuestPages, pool: 64);
        using var os = new GuestOperatingSystem(vm);
        GuestProcess p = os.Spawn("web", 800);
        for (ulong vpn = 0; vpn < 800; vpn++) os.Vm.Page(new GuestPage(os.EnsureResident(p, vpn)))[0] = 1;
        for (ulong vpn = 500; vpn < 800; vpn++) os.Release(p, vpn);                 // 300 free pages, still backed
        ScheduledVm v = s.Add(os, new BalloonApplication(os, vm.Id), 1000, 0, GuestPages, Allocation);
        long over = v.ChargedFrames - (long)v.CeilingPages;
        Assert.True(over > 64, $"web is only {over} frames over its ceiling: one step would do");

        for (int i = 0; i < 20; i++)
        {
            long before = v.ChargedFrames;
            StepReport r = s.Step();
            output.WriteLine($"step {i}: inflated {r.Inflated.GetValueOrDefault("web")}, charged {before} -> {v.ChargedFrames}, ceiling {v.CeilingPages}");
            Assert.Equal(0, r.HostSwapped.GetValueOrDefault("web"));
        }
        Assert.True(v.ChargedFrames <= (long)v.CeilingPages, $"web holds {v.ChargedFrames} frames, its ceiling is {v.CeilingPages}");
        Assert.Equal(0UL, vm.Counters.HostSwapOuts);
        Assert.Empty(FrameAccounting.Check(t.Arena, [vm]));
    }

    // A VM that grew within its ceiling between two steps and whose ceiling then falls (pages lent to it called
    // back) is measured from the start of the step, not from the previous one: its balloon, taking free pages,
    // is progress although the VM still costs more than it did at the previous step.
    [Fact]
    public void A_vm_newly_over_its_ceiling_whose_balloon_takes_frames_is_not_host_swapped_for_its_growth_before()
    {
        using var t = new TestArena(2048);
        MemoryScheduler s = Scheduler(t, Reclamation.Balloon | Reclamation.HostSwap);
        GuestVm vm = t.Vm("web", GuestPages, pool: 64);
        using var os = new GuestOperatingSystem(vm);
        ScheduledVm v = s.Add(os, new BalloonApplication(os, vm.Id), 1000, 0, GuestPages, 900);
        GuestProcess p = os.Spawn("web", 850);
        for (ulong vpn = 0; vpn < 600; vpn++) os.Vm.Page(new GuestPage(os.EnsureResident(p, vpn)))[0] = 1;
        s.Step();
        long atStep = v.ChargedFrames;
        Assert.True(atStep <= 900, $"web holds {atStep} frames, its ceiling is 900");
        // Between steps it grows within its ceiling, frees some of it, and then its allocation falls to 600.
        for (ulong vpn = 600; vpn < 850; vpn++) os.Vm.Page(new GuestPage(os.EnsureResident(p, vpn)))[0] = 1;
        for (ulong vpn = 500; vpn < 850; vpn++) os.Release(p, vpn);
        long grown = v.ChargedFrames;
        Assert.True(grown > atStep + 64, $"web grew from {atStep} to only {grown} frames");
        v.AllocationPages = Allocation;
        StepReport r = s.Step();
        output.WriteLine($"charged {atStep} at the step, {grown} before the next, {v.ChargedFrames} after it; ceiling {v.CeilingPages}; " +
                         $"inflated {r.Inflated.GetValueOrDefault("web")}, host-swapped {r.HostSwapped.GetValueOrDefault("web")}");
        Assert.True(r.Inflated.GetValueOrDefault("web") > 0 && v.ChargedFrames < grown, "the balloon took nothing");
        Assert.Equal(0, r.HostSwapped.GetValueOrDefault("web"));
        Assert.Equal(0UL, vm.Counters.HostSwapOuts);
        Assert.Empty(FrameAccounting.Check(t.Arena, [vm]));
    }
}
