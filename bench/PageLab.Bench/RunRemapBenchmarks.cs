// Why: remapping a 64-page run in one call should cost far less than 64 single-page remaps (one mmap, one
// VMA change, one TLB flush); all three rows report the cost of remapping 64 pages.
using BenchmarkDotNet.Attributes;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;

namespace PageLab.Bench;

[MemoryDiagnoser]
[MedianColumn]
public class RunRemapBenchmarks
{
    private const int Run = 64;
    private static readonly GuestPage Page0 = new(0);

    private RawMemfd _raw = null!;
    private long _rawFrame;
    private HostArena _arena = null!;
    private GuestVm _vm = null!;
    private HostFrame[] _spare = null!; // Held, spare[i] goes to page i; the other run is mapped

    [GlobalSetup]
    public void Setup()
    {
        _raw = new RawMemfd(frames: 2 * Run, rangePages: Run);
        _raw.Map(page: 0, count: Run, frame: 0);
        _arena = HostArena.Create(4 * Run, "pagelab-bench-run");
        _vm = GuestVm.Create(_arena, "run", Run, poolCapacity: 1);
        _vm.Map(Page0, _arena.Allocate(Run));
        _spare = _arena.Allocate(Run);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _vm.Dispose();
        _arena.Release(_spare);
        _arena.Dispose();
        _raw.Dispose();
    }

    [Benchmark(Baseline = true, Description = "raw mmap, one 64-page run")]
    public void RawMmapRun()
    {
        _rawFrame = Run - _rawFrame;
        _raw.Map(page: 0, count: Run, frame: _rawFrame);
    }

    [Benchmark(Description = "GuestVm.Map, one 64-page run")]
    public void GuestVmMapRun() => _spare = _vm.Map(Page0, _spare);

    [Benchmark(Description = "GuestVm.Map, 64 single pages")]
    public void GuestVmMapSingles()
    {
        for (int i = 0; i < Run; i++)
            _spare[i] = _vm.Map(new GuestPage((ulong)i), [_spare[i]])[0];
    }
}
