// The C floors of the fault and recovery benchmarks (c/baseline.c, c/demand_floor.c,
// c/recovery_floor.c, built into libpagelab_baseline by the bench project).
using System.Runtime.InteropServices;

namespace PageLab.Bench;

internal static unsafe partial class Baseline
{
    // Write fault (c/baseline.c): a handler that mprotects a faulting page of its range back to RW.
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_install")] public static partial int Install(nint @base, nuint len);
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_uninstall")] public static partial int Uninstall();
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_round_trip")] public static partial void RoundTrip(byte* page);

    // Demand fault (c/demand_floor.c): a handler that maps the next pool frame at a faulting page.
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_demand_install")]
    public static partial int DemandInstall(nint @base, nuint pages, int fd, uint poolFrames);
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_demand_uninstall")] public static partial int DemandUninstall();
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_demand_round")] public static partial int DemandRound();

    // Parity recovery (c/recovery_floor.c): inject + rebuild + hash + one mmap, no handler.
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_recovery_init")]
    public static partial int RecoveryInit(nint guestPage, nint hostView, int fd, uint k);
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_recovery_round")]
    public static partial int RecoveryRound(byte* mask, uint offset, uint len);
}
