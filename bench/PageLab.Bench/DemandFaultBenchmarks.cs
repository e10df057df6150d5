// Why: a PageLab demand-zero fault (SIGSEGV resolved by the native handler) against the kernel's own first
// touch of punched memfd memory; per page, with the unback/punch and pool refill of each round included.
using BenchmarkDotNet.Attributes;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;

namespace PageLab.Bench;

[MemoryDiagnoser]
[MedianColumn]
public unsafe class DemandFaultBenchmarks
{
    private const int Pages = 256;
    private const uint PoolCapacity = 512;
    private static readonly GuestPage Page0 = new(0);

    private RawMemfd _raw = null!;
    private HostArena _arena = null!;
    private GuestVm _vm = null!;

    [GlobalSetup]
    public void Setup()
    {
        _raw = new RawMemfd(frames: Pages, rangePages: Pages);
        _raw.Map(page: 0, count: Pages, frame: 0);
        _arena = HostArena.Create(Pages + PoolCapacity + Pages, "pagelab-bench-fault");
        _vm = GuestVm.Create(_arena, "fault", Pages, PoolCapacity);
        _vm.RefillPool();
        Touch(_vm.Base, _vm.Arena.PageSize);
        _vm.RefillPool();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _vm.Dispose();
        _arena.Dispose();
        _raw.Dispose();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Pages, Description = "punch + kernel first touch, per page")]
    public void KernelFirstTouch()
    {
        _raw.Punch(frame: 0, count: Pages);
        Touch(_raw.Base, _raw.PageSize);
    }

    [Benchmark(OperationsPerInvoke = Pages, Description = "Unback + demand fault + RefillPool, per page")]
    public void GuestVmDemandFault()
    {
        _vm.Unback(Page0, Pages);
        Touch(_vm.Base, _vm.Arena.PageSize);
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
