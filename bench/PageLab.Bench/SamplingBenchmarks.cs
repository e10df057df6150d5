// Why: the cost of one working-set sampling period for one VM (collect last period's 100 pages,
// restore the untouched ones, protect a fresh random 100), against 200 raw mprotect calls.
using BenchmarkDotNet.Attributes;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core.Scheduling;

namespace PageLab.Bench;

[MemoryDiagnoser]
[MedianColumn]
public class SamplingBenchmarks
{
    private const ulong VmPages = 4096;
    private HostArena _arena = null!;
    private GuestVm _vm = null!;
    private WorkingSetEstimator _ws = null!;
    private RawMemfd _raw = null!;
    private readonly Random _rng = new(3);

    [GlobalSetup]
    public void Setup()
    {
        _arena = HostArena.Create((uint)VmPages + 64, "pagelab-bench-sampling");
        _vm = GuestVm.Create(_arena, "ws", VmPages, poolCapacity: 1);
        _vm.Back(new GuestPage(0), VmPages);
        _ws = new WorkingSetEstimator(_vm, new Random(1), samplePages: 100);
        _raw = new RawMemfd(frames: (long)VmPages, rangePages: (long)VmPages);
        _raw.Map(page: 0, count: (long)VmPages, frame: 0);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _vm.Dispose();
        _arena.Dispose();
        _raw.Dispose();
    }

    [Benchmark(Baseline = true, Description = "raw: 100 x mprotect NONE + 100 x RW")]
    public void Raw()
    {
        Span<long> pages = stackalloc long[100];
        for (int i = 0; i < pages.Length; i++) pages[i] = _rng.NextInt64((long)VmPages);
        foreach (long p in pages) _raw.Protect(p, 1, 0);
        foreach (long p in pages) _raw.Protect(p, 1, 3);
    }

    [Benchmark(Description = "one sampling period (100 pages)")]
    public void Period() => _ws.NextPeriod();
}
