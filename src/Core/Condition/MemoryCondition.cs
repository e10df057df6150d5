// How available memory really is in one VM, computed by the virtualization layer from what only it
// knows: the balloon's target and actual size, how often the guest pages the balloon out, the VM's
// allocation and working set, and host stalls. Also the guest-OS-only answer, for contrast.
namespace PageLab.Core.Condition;

public enum MemoryLevel { Plenty, Low, Critical }

/// <summary>The answer to a condition query.</summary>
/// <param name="TrueAvailablePages">Pages a guest application can still use without making the guest page:
/// guest free pages, less those the host has no frame for, less what the balloon is about to take.</param>
/// <param name="GuestFreePages">What the guest OS alone would say is free.</param>
/// <param name="EffectivePages">Memory the VM really has: its host allocation (the balloon holds the rest).</param>
/// <param name="BalloonPageOutsPerWindow">Balloon pages the guest paged out in the last window (the seed's signal).</param>
/// <param name="StallShare">Share of the last window's ticks in which the VM stalled on memory
/// (guest major faults, host stalls or balloon page-outs), 0..1, as PSI's "some".</param>
public sealed record MemoryConditionReport(
    int Tick, MemoryLevel Level, ulong TrueAvailablePages, ulong GuestFreePages, ulong TotalPages, ulong EffectivePages,
    ulong BalloonTargetPages, ulong BalloonActualPages, ulong BalloonPageOutsPerWindow,
    double StallShare, ulong ActiveEstimatePages, long HostFreeFrames)
{
    /// <summary>True available memory as a share of what the VM really has.</summary>
    public double AvailableFraction => EffectivePages == 0 ? 0 : (double)TrueAvailablePages / EffectivePages;
}

/// <summary>Thresholds on the available fraction, with hysteresis so levels do not flap.</summary>
public sealed record LevelThresholds
{
    public double LowBelow { get; init; } = 0.10;
    public double LowClearsAbove { get; init; } = 0.15;
    public double CriticalBelow { get; init; } = 0.03;
    public double CriticalClearsAbove { get; init; } = 0.06;
    /// <summary>This many balloon page-outs in a window mean the guest is already under pressure.</summary>
    public ulong LowAtBalloonPageOuts { get; init; } = 8;

    public void Validate()
    {
        if (!(0 <= CriticalBelow && CriticalBelow < CriticalClearsAbove && CriticalClearsAbove <= LowBelow
              && LowBelow < LowClearsAbove && LowClearsAbove <= 1))
            throw new ArgumentException(
                $"thresholds must satisfy 0 <= criticalBelow ({CriticalBelow}) < criticalClearsAbove ({CriticalClearsAbove}) " +
                $"<= lowBelow ({LowBelow}) < lowClearsAbove ({LowClearsAbove}) <= 1");
    }

    /// <summary>The next level from the current one: a level is entered below its threshold and left
    /// only above its (higher) clearing threshold.</summary>
    public MemoryLevel Next(MemoryLevel current, double available, ulong balloonPageOuts)
    {
        bool pressured = balloonPageOuts >= LowAtBalloonPageOuts;
        if (available < CriticalBelow) return MemoryLevel.Critical;
        if (current == MemoryLevel.Critical && available <= CriticalClearsAbove) return MemoryLevel.Critical;
        if (available < LowBelow || pressured) return MemoryLevel.Low;
        if (current != MemoryLevel.Plenty && available <= LowClearsAbove) return MemoryLevel.Low;
        return MemoryLevel.Plenty;
    }
}
