// The allocation policy interface: at the end of every sampling period the scheduler hands a policy what
// it knows about each VM and gets back each VM's allocation. Built in: static, esx, pagelab (Policies.cs).
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
    double? SampledActiveFraction, WorkingSetReport? WorkingSet, ulong GuestSwapIns, ulong GuestSwapOuts);

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
}

/// <summary>A policy gave allocations the scheduler cannot use.</summary>
public sealed class PolicyException(string message) : Exception(message);
