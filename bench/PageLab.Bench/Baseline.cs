// The C floors of the fault, recovery, host-swap, kernel-error and copy-on-write benchmarks (c/baseline.c,
// c/demand_floor.c, c/recovery_floor.c, c/hostswap_floor.c, c/sigbus_floor.c, c/cow_floor.c, built into
// libpagelab_baseline by the bench project).
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

    // Host swap (c/hostswap_floor.c): per page a hole, a pwrite and a punch; then a handler that preads
    // each touched page back into its frame and maps it.
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_swap_install")]
    public static partial int SwapInstall(nint @base, nuint pages, int fd, nint hostView, int swapFd);
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_swap_uninstall")] public static partial int SwapUninstall();
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_swap_round")] public static partial int SwapRound();

    // Copy-on-write (c/cow_floor.c): every page maps one shared frame read-only; a handler copies it into
    // the next pool frame and maps that read-write at the faulting page.
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_cow_install")]
    public static partial int CowInstall(nint @base, nuint pages, int fd, nint hostView, uint shared, uint pool);
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_cow_uninstall")] public static partial int CowUninstall();
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_cow_reshare")] public static partial int CowReshare();
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_cow_round")] public static partial void CowRound();

    // Parity recovery (c/recovery_floor.c): inject + rebuild + hash + one mmap, no handler.
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_recovery_init")]
    public static partial int RecoveryInit(nint guestPage, nint hostView, int fd, uint k, uint totalFrames);
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_recovery_round")]
    public static partial int RecoveryRound(byte* mask, uint offset, uint len);

    // Kernel-delivered error (c/sigbus_floor.c): a poison marker, then a read whose SIGBUS a handler
    // resolves by mapping a fresh frame.
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_sigbus_init")] public static partial int SigbusInit(nint guestPage, int fd);
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_sigbus_uninstall")] public static partial int SigbusUninstall();
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_sigbus_round")] public static partial int SigbusRound();
}
