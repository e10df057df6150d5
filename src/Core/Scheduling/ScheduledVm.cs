// One VM as the scheduler sees it: its guest OS, balloon application and backend, what the scheduler
// decided for it (allocation, ceiling, frame limit) and what it measured at the last step and period.
using PageLab.Core.Balloon;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;

namespace PageLab.Core.Scheduling;

/// <summary>One VM under the scheduler, with its guest OS, balloon application and backend.</summary>
public sealed class ScheduledVm
{
    internal ScheduledVm(GuestOperatingSystem os, BalloonApplication app, int shares, ulong min, ulong max, ulong allocation, Random rng, int samplePages,
        bool ballooning)
    {
        Ballooning = ballooning;
        Os = os;
        Balloon = app;
        Backend = new BalloonBackend(os, app);
        WorkingSet = new WorkingSetEstimator(os.Vm, rng, samplePages);
        Shares = shares;
        MinPages = min;
        MaxPages = max;
        AllocationPages = allocation;
        CeilingPages = allocation;
    }

    // Guest paging and host stalls at the previous step and sampling period (pressure and period deltas).
    internal ulong PagingAtStep, StallsAtStep, SwapInsAtPeriod, SwapOutsAtPeriod;
    // What the VM cost the host at the end of the previous step (when it was added, before the first), whether
    // that was over its ceiling then, and at the start of this step: the balloon's progress is measured against
    // them (MemoryScheduler.HostSwapExcess).
    internal long ChargedAtStep, ChargedAtStepStart;
    internal bool OverAtStep;

    public GuestOperatingSystem Os { get; }
    public GuestVm Vm => Os.Vm;
    public BalloonApplication Balloon { get; }
    public BalloonBackend Backend { get; }
    public WorkingSetEstimator WorkingSet { get; }
    public int Shares { get; }
    public ulong MinPages { get; }
    public ulong MaxPages { get; }
    /// <summary>The active fraction of its allocation ESX's rule would charge (see
    /// <see cref="VmSignals.ActiveOverAllocation"/>).</summary>
    public double ActiveFraction { get; internal set; }
    /// <summary>The working set the VM's policy saw last: the guest's report when it gives one, else
    /// sampling (pages).</summary>
    public ulong ActiveEstimatePages { get; internal set; }
    /// <summary>The guest's last working-set report.</summary>
    public WorkingSetReport? LastReport { get; internal set; }
    /// <summary>Host pages the policy gives this VM now.</summary>
    public ulong AllocationPages { get; internal set; }
    /// <summary>The most host pages the VM may hold now: its allocation, or more while the host lends it
    /// pages no other VM needs (work conservation).</summary>
    public ulong CeilingPages { get; internal set; }
    /// <summary>False when the scenario's reclamation leaves the balloon out: its target stays 0.</summary>
    public bool Ballooning { get; }
    /// <summary>Guest pages the balloon should hold so the VM fits its ceiling: what the guest has beyond
    /// its ceiling, less the frames sharing already saves it (<see cref="TargetSharingCreditPages"/>).</summary>
    public ulong BalloonTargetPages =>
        !Ballooning || Vm.PageCount <= CeilingPages + TargetSharingCreditPages ? 0 : Vm.PageCount - CeilingPages - TargetSharingCreditPages;
    /// <summary>This VM's part of the frames sharing saves, as of the last step: its shared pages times the
    /// host's saved frames over all sharing pages (the credits add up to the frames saved).</summary>
    public ulong SharingCreditPages { get; internal set; }
    /// <summary>The credit its balloon target counts (before the balloon: ESX's order): the mean of
    /// <see cref="SharingCreditPages"/> over the last sampling period, so one copy-on-write break does not
    /// move the target; a change of <see cref="MemoryScheduler.SharingCreditJump"/> or more (or a twentieth)
    /// is taken at once, so the target never lags the frames saved by more than that.</summary>
    public ulong TargetSharingCreditPages { get; internal set; }
    // Measured credits summed over the steps of the current sampling period, and how many.
    internal double CreditSum;
    internal int CreditSteps;
    /// <summary>This VM's part of the shared frames themselves (its shared pages less its credit): memory it
    /// uses that no VM owns, charged to it as if held.</summary>
    public long SharingChargeFrames { get; internal set; }
    /// <summary>Frames held plus the VM's part of the shared frames: what it costs the host.</summary>
    public long ChargedFrames => Vm.HeldFrames + SharingChargeFrames;
    /// <summary>The engine's frame limit for the VM's own faults, as the scheduler set it last: past it the
    /// handler host-swaps one of the VM's pages (its allocation, plus its part of the host's free pages while it
    /// is below its ceiling).</summary>
    public ulong FrameLimitPages { get; internal set; }
    /// <summary>Demand faults the host could not give a frame for (the guest paged out instead).</summary>
    public ulong HostPressureStalls { get; internal set; }
    /// <summary>Frames given beyond the allocation because the guest had nothing left to page out.</summary>
    public ulong Overcommitted { get; internal set; }
}
