// The allocation policy interface: at the end of every sampling period the scheduler hands a policy what
// it knows about each VM and gets back each VM's allocation. A policy carries its own traits; the built-in
// ones are named in PolicyCatalog (Policies.cs).
using PageLab.Core.GuestOs;

namespace PageLab.Core.Scheduling;

/// <summary>What the host knows about one VM at the end of a sampling period.</summary>
/// <param name="HeldPages">Host pages the VM holds for guest pages (demand pool not counted).</param>
/// <param name="SampledActiveFraction">ESX's estimate: the smoothed share of a random sample of the held
/// pages the guest touched in a period (real faults on sampled pages), or null before the first period.</param>
/// <param name="WorkingSet">The guest's working-set report for the period (cooperative; null when the
/// guest gives none).</param>
/// <param name="GuestSwapIns">Pages the guest read back from its swap in the period.</param>
/// <param name="GuestSwapOuts">Pages the guest wrote to its swap in the period.</param>
public sealed record VmSignals(
    string Name, int Shares, ulong MinPages, ulong MaxPages, ulong GuestPages, ulong AllocationPages, ulong HeldPages,
    double? SampledActiveFraction, WorkingSetReport? WorkingSet, ulong GuestSwapIns, ulong GuestSwapOuts)
{
    /// <summary>The sampled active fraction charged over the whole allocation (1 before the first period):
    /// see <see cref="ActiveOverAllocation"/>.</summary>
    public double SampledFractionOfAllocation => ActiveOverAllocation(SampledActiveFraction ?? 1, HeldPages, AllocationPages);

    /// <summary>The active fraction of a VM's allocation. Sampling measures f over the pages the VM holds;
    /// the paper's formula charges the whole allocation, whose pages the VM has not grown into are idle.
    /// Applying the sampled f to the whole allocation made a VM that holds a quarter of it look as active
    /// on all of it.</summary>
    public static double ActiveOverAllocation(double sampledFraction, ulong heldPages, ulong allocationPages) =>
        allocationPages == 0 ? sampledFraction : Math.Min(1, sampledFraction * heldPages / allocationPages);
}

/// <param name="Period">Sampling periods finished so far (1 at the end of the first).</param>
public sealed record AllocationRequest(ulong HostPages, double IdleTax, int Period, IReadOnlyList<VmSignals> Vms);

/// <summary>Decides how many host pages each VM gets. A scenario names its policy (<c>"policy"</c>): a
/// built-in name, or a class of the user's (<see cref="PolicyCatalog"/>) with a public parameterless
/// constructor. The scheduler checks what it returns: one allocation per VM, each within the VM's
/// [min, max], all together at most the host's pages.</summary>
public interface IAllocationPolicy
{
    string Name { get; }
    ulong[] Allocate(AllocationRequest request);

    /// <summary>How the scheduler runs this policy (default: adaptive, work-conserving, the standard bins).</summary>
    PolicyTraits Traits => PolicyTraits.Default;

    /// <summary>The pages this policy takes the VM to use, shown as its active estimate (default: the sampled
    /// fraction of the pages it holds).</summary>
    ulong EstimatePages(VmSignals vm) => (ulong)Math.Round((vm.SampledActiveFraction ?? 0) * vm.HeldPages);
}

/// <summary>What the scheduler needs to know about a policy to run it.</summary>
/// <param name="Adaptive">False: allocations never move (a static partition; reported as not adaptive).</param>
/// <param name="WorkConserving">True: host pages no VM uses are lent to VMs that page for them (a scenario may
/// still turn lending off); false: an allocation is a hard limit.</param>
/// <param name="ReportBins">Bin edges (ages in periods) the host asks guests to report their pages in.</param>
public sealed record PolicyTraits(bool Adaptive, bool WorkConserving, IReadOnlyList<int> ReportBins)
{
    /// <summary>The bins of the standard report: 0, 1, 2, 3, 5, 7, 15, 31, 63 periods (a bin holds ages up to its edge).</summary>
    public static readonly IReadOnlyList<int> StandardReportBins = [0, 1, 2, 3, 5, 7, 15, 31, 63];
    public static readonly PolicyTraits Default = new(Adaptive: true, WorkConserving: true, StandardReportBins);
    public static readonly PolicyTraits Static = new(Adaptive: false, WorkConserving: false, StandardReportBins);
}

/// <summary>A policy gave allocations the scheduler cannot use.</summary>
public sealed class PolicyException(string message) : Exception(message);
