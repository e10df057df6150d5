// Why: a PageLab demand-zero fault (SIGSEGV resolved by the native handler) against its C floor (the
// same unmap, punch and one mmap per fault from a plain C handler) and the kernel's own first touch of
// punched memfd memory; per page, with the unback/punch and pool refill of each round included. With
// fault-around one fault maps a block, so a guest's first touches should cost close to the kernel's.
using BenchmarkDotNet.Attributes;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Native;

namespace PageLab.Bench;

/// <summary>
/// Each row has its own setup, so a row's faults pass through its own handler only: the C floor's setup
/// installs the C handler (after the runtime's, chaining to it) and creates no PageLab VM, so libpagelab's
/// handler is not installed in that process; the PageLab row never installs the C handler; the kernel
/// row installs neither. BenchmarkDotNet runs each row in its own process; under an in-process toolchain
/// the C row's cleanup uninstalls its handler again.
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
public unsafe class DemandFaultBenchmarks
{
    private const int Pages = 256;
    private const uint PoolCapacity = 512;
    private static readonly GuestPage Page0 = new(0);

    private const int AroundWindows = 4096;   // fresh windows of Pages pages per fault-around VM

    private RawMemfd? _raw;
    private HostArena? _arena;
    private GuestVm? _vm;
    private int _window;

    [GlobalSetup(Target = nameof(KernelFirstTouch))]
    public void SetupKernel()
    {
        _raw = new RawMemfd(frames: Pages, rangePages: Pages);
        _raw.Map(page: 0, count: Pages, frame: 0);
    }

    [GlobalSetup(Target = nameof(CFloor))]
    public void SetupCFloor()
    {
        _raw = new RawMemfd(frames: Pages, rangePages: Pages);
        int rc = Baseline.DemandInstall(_raw.Base, Pages, _raw.Fd, Pages);
        if (rc < 0) throw new ErrnoException("bl_demand_install: sigaction(SIGSEGV)", -rc);
        CFloor(); // the first round, as the PageLab setup touches every page once
    }

    [GlobalSetup(Target = nameof(GuestVmDemandFault))]
    public void SetupPageLab()
    {
        _arena = HostArena.Create(Pages + PoolCapacity + Pages, "pagelab-bench-fault");
        _vm = GuestVm.Create(_arena, "fault", Pages, PoolCapacity);
        _vm.RefillPool();
        Touch(_vm.Base, _vm.Arena.PageSize);
        _vm.RefillPool();
    }

    [GlobalSetup(Target = nameof(GuestVmFaultAround))]
    public void SetupFaultAround()
    {
        _arena = HostArena.Create(Pages + PoolCapacity + Pages, "pagelab-bench-around");
        NewAroundVm();
    }

    // Fault-around fills only pages that never had a frame, so every round needs fresh ones: a VM of many
    // windows, made again when they are used up (once per AroundWindows rounds).
    private void NewAroundVm()
    {
        _vm?.Dispose();
        _vm = GuestVm.Create(_arena!, "around", (ulong)Pages * AroundWindows, PoolCapacity);
        _vm.SetFaultAround(GuestVm.MaxFaultAround);
        _vm.RefillPool();
        _window = 0;
    }

    [GlobalCleanup(Target = nameof(CFloor))]
    public void CleanupCFloor()
    {
        _ = Baseline.DemandUninstall(); // teardown: a failure leaves a disarmed handler that only chains
        _raw?.Dispose();
    }

    [GlobalCleanup(Targets = [nameof(KernelFirstTouch), nameof(GuestVmDemandFault), nameof(GuestVmFaultAround)])]
    public void Cleanup()
    {
        _vm?.Dispose();
        _arena?.Dispose();
        _raw?.Dispose();
    }

    [Benchmark(OperationsPerInvoke = Pages, Description = "punch + kernel first touch, per page")]
    public void KernelFirstTouch()
    {
        _raw!.Punch(frame: 0, count: Pages);
        Touch(_raw.Base, _raw.PageSize);
    }

    /// <summary>C floor (c/demand_floor.c): unmap the range (one mmap), punch its frames (one fallocate),
    /// then one write per page, each faulting into a C handler that maps a pool frame there (one mmap).</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Pages, Description = "C: unmap + punch + SIGSEGV maps pool frame, per page")]
    public void CFloor()
    {
        int rc = Baseline.DemandRound();
        if (rc != 0) throw new ErrnoException("bl_demand_round", -rc);
    }

    [Benchmark(OperationsPerInvoke = Pages, Description = "Unback + demand fault + RefillPool, per page")]
    public void GuestVmDemandFault()
    {
        _vm!.Unback(Page0, Pages);
        Touch(_vm.Base, _vm.Arena.PageSize);
        _vm.RefillPool();
    }

    /// <summary>First touches of never-used pages with a 64-page fault-around block: one fault per 64 pages.</summary>
    [Benchmark(OperationsPerInvoke = Pages, Description = "fault-around 64: first touch + Unback + RefillPool, per page")]
    public void GuestVmFaultAround()
    {
        if (_window == AroundWindows) NewAroundVm();
        var first = new GuestPage((ulong)_window++ * Pages);
        Touch(_vm!.Base + (nint)(first.Value * (ulong)_vm.Arena.PageSize), _vm.Arena.PageSize);
        _vm.Unback(first, Pages);
        _vm.RefillPool();
    }

    /// <summary>Writes one byte to each of the first <see cref="Pages"/> pages at <paramref name="at"/>.</summary>
    private static void Touch(nint at, int pageSize)
    {
        // SAFETY: both ranges are Pages pages long and live until Cleanup; a guest page that is unbacked
        // takes a demand-zero fault that the native handler resolves (the pool holds PoolCapacity >= Pages).
        byte* p = (byte*)at;
        for (int i = 0; i < Pages; i++) p[(long)i * pageSize] = (byte)i;
    }
}
