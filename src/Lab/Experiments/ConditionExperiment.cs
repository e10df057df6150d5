// The experiment of the memory-condition seed: one adaptive cache, run twice in the same scenario
// (its VM's balloon inflates, holds, then deflates), once driven by the hypervisor's condition and
// once by the guest OS's free memory.
using PageLab.Core.Balloon;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Scheduling;
using PageLab.Core.Condition;

namespace PageLab.Lab.Experiments;

public enum ConditionSource { Hypervisor, GuestOs }

public sealed record ConditionExperimentResult(
    ConditionSource Source, long Hits, long SlowHits, long Misses, double HitRate, ulong CachePageOuts,
    ulong GuestSwapOuts, ulong FinalCapacity, int FirstLowTickHypervisor, int FirstLowTickGuestOs);

public static class ConditionExperiment
{
    public const ulong VmPages = 2048;

    public static ConditionExperimentResult Run(ConditionSource source, int seed = 1, int ticks = 400)
    {
        using var arena = HostArena.Create((uint)(2 * VmPages + 512), "pagelab-condition");
        var scheduler = new MemoryScheduler(arena, new SchedulerOptions { HostPages = 2 * VmPages, Policy = new StaticPolicy(), WorkConserving = false, BatchPages = 64 });
        GuestVm vm = GuestVm.Create(arena, "cache-vm", VmPages, 64);
        GuestVm other = GuestVm.Create(arena, "other", VmPages, 64);
        var os = new GuestOperatingSystem(vm);
        var otherOs = new GuestOperatingSystem(other);
        try
        {
            ScheduledVm v = scheduler.Add(os, new BalloonApplication(os, vm.Id), 1000, 0, VmPages, VmPages);
            scheduler.Add(otherOs, new BalloonApplication(otherOs, other.Id), 1000, 0, VmPages, VmPages);
            var condition = new ConditionService(scheduler, windowTicks: 20);
            MemoryLevel guestLevel = MemoryLevel.Plenty;
            GuestProcess app = os.Spawn("cache", VmPages);
            GuestProcess background = os.Spawn("background", VmPages);
            for (ulong p = 0; p < 300; p++) background.Page(p)[0] = 1;
            var cache = new AdaptiveCache(app, maxEntries: 1500, initialEntries: 200, stepEntries: 32,
                source == ConditionSource.Hypervisor ? () => condition.Query("cache-vm").Level : () => guestLevel);
            var rng = new Random(seed);
            int firstLowHv = -1, firstLowOs = -1;
            for (int tick = 1; tick <= ticks; tick++)
            {
                // The host takes most of the VM's memory away in the middle of the run, then gives it back.
                v.AllocationPages = tick >= ticks / 4 && tick < ticks * 3 / 4 ? VmPages * 35 / 100 : VmPages;
                for (int i = 0; i < 300; i++)
                {
                    double u = rng.NextDouble();
                    cache.Get((ulong)(Math.Pow(u, 2.0) * 3000));                  // skewed: low keys are hot
                }
                for (ulong p = 0; p < 300; p++) background.Page(p)[1]++;
                scheduler.Step();
                condition.Tick(tick);
                guestLevel = condition.GuestOsLevel("cache-vm", guestLevel);
                if (firstLowHv < 0 && condition.Query("cache-vm").Level != MemoryLevel.Plenty) firstLowHv = tick;
                if (firstLowOs < 0 && guestLevel != MemoryLevel.Plenty) firstLowOs = tick;
                cache.Adapt();
            }
            return new ConditionExperimentResult(source, cache.Hits, cache.SlowHits, cache.Misses, cache.HitRate,
                cache.PageOuts, os.Stats.SwapOuts, cache.CapacityEntries, firstLowHv, firstLowOs);
        }
        finally
        {
            os.Dispose();
            otherOs.Dispose();
            vm.Dispose();
            other.Dispose();
        }
    }
}
