// Why: end-to-end balloon transfer throughput (reserve + write value + identify + verify + reclaim +
// remap into the other VM), on contiguous and on scattered guest pages, against the raw work floor.
using BenchmarkDotNet.Attributes;
using PageLab.Core;
using PageLab.Core.Balloon;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;

namespace PageLab.Bench;

[MemoryDiagnoser]
[MedianColumn]
public class BalloonBenchmarks
{
    private const int Pages = 1024;           // moved per invocation
    private const ulong VmPages = 4096;

    [Params("contiguous", "scattered")]
    public string Layout { get; set; } = "contiguous";

    private HostArena _arena = null!;
    private Side _a = null!, _b = null!;
    private bool _aToB = true;
    private RawMemfd _raw = null!;

    private sealed class Side
    {
        public required GuestVm Vm;
        public required GuestOperatingSystem Os;
        public required BalloonApplication App;
        public required BalloonBackend Backend;
    }

    [GlobalSetup]
    public void Setup()
    {
        _arena = HostArena.Create((uint)(VmPages * 3), "pagelab-bench-balloon");
        _a = MakeSide("a");
        _b = MakeSide("b");
        // b starts with its balloon inflated so the first move a -> b has pages to deflate onto.
        _b.App.SetTarget(Pages);
        _arena.Release(_b.Backend.Inflate(Pages).Frames);
        _raw = new RawMemfd(frames: 2 * Pages, rangePages: Pages);
        _raw.Map(page: 0, count: Pages, frame: 0);
    }

    private Side MakeSide(string name)
    {
        GuestVm vm = GuestVm.Create(_arena, name, VmPages, poolCapacity: (uint)VmPages);
        vm.RefillPool();
        var os = new GuestOperatingSystem(vm);
        if (Layout == "scattered")
        {
            // Leave every other guest page free on top of the guest's free list: balloon pages are then
            // scattered one page apart, so each is its own run.
            GuestProcess frag = os.Spawn("fragmenter", 2 * Pages + 2);
            for (ulong v = 0; v < 2 * Pages + 2; v++) frag.Page(v)[0] = 1;
            for (ulong v = 0; v < 2 * Pages + 2; v += 2) frag.Release(v);
        }
        var app = new BalloonApplication(os, vm.Id);
        return new Side { Vm = vm, Os = os, App = app, Backend = new BalloonBackend(os, app) };
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (Side s in new[] { _a, _b })
        {
            s.Os.Dispose();
            s.Vm.Dispose();
        }
        _arena.Dispose();
        _raw.Dispose();
    }

    /// <summary>The floor: write a page of value and map one memfd page per guest page (one call per
    /// run when contiguous).</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Pages, Description = "raw: write value + mmap")]
    public unsafe void Raw()
    {
        {
            for (int i = 0; i < Pages; i++)
                BalloonTag.Write(new Span<byte>((byte*)_raw.Base + (long)i * _raw.PageSize, _raw.PageSize), 1, (ulong)i, 1);
        }
        long frame = _aToB ? Pages : 0;
        _aToB = !_aToB;
        if (Layout == "contiguous") _raw.Map(page: 0, count: Pages, frame: frame);
        else for (int i = 0; i < Pages; i++) _raw.Map(page: i, count: 1, frame: frame + i);
    }

    [Benchmark(OperationsPerInvoke = Pages, Description = "balloon transfer")]
    public void Transfer()
    {
        (Side src, Side dst) = _aToB ? (_a, _b) : (_b, _a);
        _aToB = !_aToB;
        src.App.SetTarget(src.App.ReservedPages + Pages);
        HostFrame[] frames = src.Backend.Inflate(Pages).Frames;
        dst.App.SetTarget(dst.App.ReservedPages - Pages);
        int used = dst.Backend.Deflate(Pages, frames);
        if (used != frames.Length)
            throw new InvalidOperationException($"moved {frames.Length} frames but the target took {used}");
    }
}
