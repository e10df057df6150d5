// Why: the goal is a PageLab single-page remap within 1.10x of the raw mmap(MAP_FIXED) it wraps.
using BenchmarkDotNet.Attributes;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;

namespace PageLab.Bench;

[MemoryDiagnoser]
[MedianColumn]
public class RemapBenchmarks
{
    private const int RangePages = 16; // page 0 is remapped; the other pages stay unmapped on both sides
    private static readonly GuestPage Page0 = new(0);

    private RawMemfd _raw = null!;
    private long _rawFrame;
    private HostArena _arena = null!;
    private GuestVm _vm = null!;
    private HostFrame _spare; // Held; the other of the two frames is mapped at page 0

    [GlobalSetup]
    public void Setup()
    {
        _raw = new RawMemfd(frames: 2, rangePages: RangePages);
        _raw.Map(page: 0, count: 1, frame: 0);
        _arena = HostArena.Create(64, "pagelab-bench-remap");
        _vm = GuestVm.Create(_arena, "remap", RangePages, poolCapacity: 1);
        HostFrame[] frames = _arena.Allocate(2);
        _vm.Map(Page0, [frames[0]]);
        _spare = frames[1];
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _vm.Dispose();
        _arena.Release([_spare]);
        _arena.Dispose();
        _raw.Dispose();
    }

    [Benchmark(Baseline = true, Description = "raw mmap, 1 page")]
    public void RawMmap()
    {
        _rawFrame ^= 1;
        _raw.Map(page: 0, count: 1, frame: _rawFrame);
    }

    [Benchmark(Description = "GuestVm.Map, 1 page")]
    public void GuestVmMap()
    {
        HostFrame[] previous = _vm.Map(Page0, [_spare]);
        _spare = previous[0];
    }
}
