// Why: end-to-end balloon transfer throughput (reserve + write value + identify + verify + reclaim +
// remap into the other VM), on contiguous and on scattered guest pages, against a C floor that does the
// same passes and syscalls without PageLab's page tables, checks and accounting.
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using PageLab.Core;
using PageLab.Core.Balloon;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;

namespace PageLab.Bench;

internal static unsafe partial class BalloonFloor
{
    [LibraryImport("pagelab_baseline", EntryPoint = "bl_balloon_move")]
    public static partial int Move(nint @base, nint host, int fd, nuint page, ulong* src, ulong* dst, uint* frames, int n);
}

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
    private ulong[] _rawA = null!, _rawB = null!;   // balloon pages of the two raw views
    private uint[] _rawFrames = null!;
    private bool _rawAToB = true;

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
        SetupRaw();
        // Each iteration is a single invocation (the source is warmed before it), too few calls for the
        // runtime to tier the transfer path up on its own: run it here until it has, so the measurement
        // is of the optimised code, not of the first-tier JIT (which measured 2.5 times slower).
        for (int round = 0; round < 3; round++)
        {
            for (int i = 0; i < 40; i++)
            {
                WarmSource();
                Move();
            }
            Thread.Sleep(300);   // the tier-1 compiles run on a background thread
        }
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

    // The raw views: a at pages [0, VmPages), b at [VmPages, 2 VmPages). Contiguous: a's balloon pages are
    // [0, Pages) on frames [0, Pages). Scattered: balloon pages are every other page in both views, the
    // pages between them mapped to frames of their own, so every balloon page is its own run on each side.
    private void SetupRaw()
    {
        _raw = new RawMemfd(frames: 4 * Pages + 4, rangePages: 2 * (long)VmPages);
        int stride = Layout == "scattered" ? 2 : 1;
        _rawA = new ulong[Pages];
        _rawB = new ulong[Pages];
        _rawFrames = new uint[Pages];
        for (int i = 0; i < Pages; i++)
        {
            _rawA[i] = (ulong)(i * stride);
            _rawB[i] = VmPages + (ulong)(i * stride);
            _rawFrames[i] = (uint)(i * stride);
        }
        _raw.Map(page: 0, count: Pages * stride, frame: 0);
        if (stride == 2)
            for (int i = 0; i < Pages; i++) _raw.Map(page: (long)VmPages + 2 * i + 1, count: 1, frame: 2 * Pages + 2 * i + 1);
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

    // The source's pages are in use before it inflates (as in a guest whose memory is in use), so the
    // page tables behind them are filled outside the measurement. The target's first touch of the pages
    // it receives is measured separately (TransferThenTouch).
    [IterationSetup(Targets = [nameof(Transfer), nameof(TransferThenTouch)])]
    public void WarmSource()
    {
        GuestVm vm = (_aToB ? _a : _b).Vm;
        for (ulong g = 0; g < vm.PageCount; g++)
            if (vm.StateOf(new GuestPage(g)) == GuestPageState.Backed) Volatile.Read(ref vm.Page(new GuestPage(g))[0]);
    }

    [IterationSetup(Target = nameof(Raw))]
    public unsafe void WarmRawSource()
    {
        foreach (ulong p in _rawAToB ? _rawA : _rawB) _ = Volatile.Read(ref *(byte*)(_raw.Base + (nint)(p * (ulong)_raw.PageSize)));
    }

    /// <summary>The floor: the same passes over each page and the same unmap and map calls, in C.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Pages, Description = "C floor: same passes and mmaps")]
    public unsafe void Raw()
    {
        (ulong[] src, ulong[] dst) = _rawAToB ? (_rawA, _rawB) : (_rawB, _rawA);
        _rawAToB = !_rawAToB;
        int bad;
        fixed (ulong* s = src)
        fixed (ulong* d = dst)
        fixed (uint* f = _rawFrames)
            bad = BalloonFloor.Move(_raw.Base, _raw.HostView, _raw.Fd, (nuint)_raw.PageSize, s, d, f, Pages);
        if (bad != 0) throw new InvalidOperationException($"C floor: {bad} (-1: an mmap failed)");
    }

    [Benchmark(OperationsPerInvoke = Pages, Description = "balloon transfer")]
    public void Transfer() => Move();

    [Benchmark(OperationsPerInvoke = Pages, Description = "transfer, then the target reads each page")]
    public void TransferThenTouch()
    {
        Side dst = _aToB ? _b : _a;
        HostFrame[] frames = Move();
        var moved = new bool[_arena.FrameCount];
        foreach (HostFrame f in frames) moved[f.Value] = true;
        int sum = 0;
        for (ulong g = 0; g < dst.Vm.PageCount; g++)
            if (dst.Vm.Translate(new GuestPage(g)) is HostFrame f && moved[f.Value]) sum += dst.Vm.Page(new GuestPage(g))[0];
        if (sum != 0) throw new InvalidOperationException("a moved page did not read as zero");
    }

    private HostFrame[] Move()
    {
        (Side src, Side dst) = _aToB ? (_a, _b) : (_b, _a);
        _aToB = !_aToB;
        src.App.SetTarget(src.App.ReservedPages + Pages);
        HostFrame[] frames = src.Backend.Inflate(Pages).Frames;
        dst.App.SetTarget(dst.App.ReservedPages - Pages);
        int used = dst.Backend.Deflate(Pages, frames);
        if (used != frames.Length)
            throw new InvalidOperationException($"moved {frames.Length} frames but the target took {used}");
        return frames;
    }
}
