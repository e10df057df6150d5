// Why: what a write to a shared page costs (a copy-on-write fault resolved by the native handler) against
// its C floor and against a write to a private page (the timing difference is the side channel that keeps
// sharing opt-in); and how many pages per second the sharing scanner gets through against KSM's default
// rate of 5,000 pages/s.
using BenchmarkDotNet.Attributes;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core.Sharing;
using PageLab.Native;

namespace PageLab.Bench;

/// <summary>
/// Each iteration writes one byte (a zero, so the content stays mergeable) to each of 1,024 pages that all
/// map one shared zero frame read-only. PageLab: each write is a real SIGSEGV; the native handler takes a
/// pool frame, copies the shared frame into it, maps it read-write and drops one sharer. The C floor
/// (c/cow_floor.c) does the copy and the mmap from a plain C handler. The pages are merged again (and the
/// pool refilled) in each iteration's setup, outside the measurement. The private row writes the same
/// bytes to private, writable pages: no fault. Each row has its own setup, so only its own handler sees
/// its faults (as in DemandFaultBenchmarks).
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
public unsafe class CopyOnWriteBenchmarks
{
    private const int Pages = 1024;
    private static readonly GuestPage Page0 = new(0);

    private RawMemfd? _raw;
    private HostArena? _arena;
    private GuestVm? _vm;

    [GlobalSetup(Target = nameof(CFloor))]
    public void SetupCFloor()
    {
        _raw = new RawMemfd(frames: Pages + 1, rangePages: Pages);
        int rc = Baseline.CowInstall(_raw.Base, Pages, _raw.Fd, _raw.HostView, shared: 0, pool: 1);
        if (rc < 0) throw new ErrnoException("bl_cow_install: sigaction(SIGSEGV)", -rc);
    }

    [IterationSetup(Target = nameof(CFloor))]
    public void ReshareCFloor()
    {
        int rc = Baseline.CowReshare();
        if (rc != 0) throw new ErrnoException("bl_cow_reshare", -rc);
    }

    [GlobalSetup(Targets = [nameof(GuestVmCopyOnWrite), nameof(PrivateWrite)])]
    public void SetupPageLab()
    {
        _arena = HostArena.Create(3 * Pages, "pagelab-bench-cow");
        _vm = GuestVm.Create(_arena, "cow", Pages, poolCapacity: Pages);
        _vm.EnableSharing();
        _vm.Back(Page0, Pages);
    }

    [IterationSetup(Target = nameof(GuestVmCopyOnWrite))]
    public void ResharePageLab()
    {
        // Every write of the last iteration broke its page's sharing (or this is the first iteration).
        for (ulong g = 0; g < Pages; g++)
            if (_vm!.StateOf(new GuestPage(g)) != GuestPageState.Backed)
                throw new InvalidOperationException($"page {g} is {_vm.StateOf(new GuestPage(g))}: a write did not take its copy-on-write fault");
        HostFrame zero = _vm!.ShareCreate(Page0) ?? throw new InvalidOperationException("page 0 could not be shared");
        for (ulong g = 1; g < Pages; g++)
            if (_vm.TryShare(new GuestPage(g), zero) != ShareResult.Merged) throw new InvalidOperationException($"page {g} did not merge");
        _vm.RefillPool();
    }

    [GlobalCleanup(Target = nameof(CFloor))]
    public void CleanupCFloor()
    {
        _ = Baseline.CowUninstall(); // teardown: a failure leaves a disarmed handler that only chains
        _raw?.Dispose();
    }

    [GlobalCleanup(Targets = [nameof(GuestVmCopyOnWrite), nameof(PrivateWrite)])]
    public void Cleanup()
    {
        _vm?.Dispose();
        _arena?.Dispose();
    }

    /// <summary>C floor (c/cow_floor.c): one write per page, each faulting into a C handler that copies the
    /// shared frame into a pool frame and maps it read-write.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Pages, Description = "C: SIGSEGV copies shared frame + mmap RW, per page")]
    public void CFloor() => Baseline.CowRound();

    [Benchmark(OperationsPerInvoke = Pages, Description = "write to a shared page: copy-on-write fault, per page")]
    public void GuestVmCopyOnWrite() => Touch(_vm!.Base, _vm.Arena.PageSize);

    [Benchmark(OperationsPerInvoke = Pages, Description = "write to a private page (no fault), per page")]
    public void PrivateWrite() => Touch(_vm!.Base, _vm.Arena.PageSize);

    private static void Touch(nint at, int pageSize)
    {
        // SAFETY: the range is Pages pages long and lives until Cleanup; a shared page takes a
        // copy-on-write fault that the native handler resolves (the pool holds Pages frames).
        byte* p = (byte*)at;
        for (int i = 0; i < Pages; i++) p[(long)i * pageSize] = 0;
    }
}

/// <summary>
/// The sharing scanner's throughput, per page scanned: 4,096 pages of distinct content (hash, look up, no
/// merge), and two VMs booted from the same image (every page of the second merges onto the first's; the
/// pages are unshared again in each iteration's setup). KSM's default rate is 5,000 pages/s (100 pages per
/// 20 ms), i.e. 200 µs per page of wall time.
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
public class ScannerBenchmarks
{
    private const int Pages = 4096;
    private HostArena? _arena;
    private GuestVm? _a, _b;
    private PageScanner? _scanner;

    private static void FillUnique(GuestVm vm, ulong page, int seed)
    {
        Span<ulong> w = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(vm.Page(new GuestPage(page)));
        for (int i = 0; i < w.Length; i++) w[i] = (ulong)HashCode.Combine(seed, page, i) << 32 | (uint)i;
    }

    [GlobalSetup]
    public void Setup()
    {
        _arena = HostArena.Create(3 * Pages, "pagelab-bench-scan");
        _a = GuestVm.Create(_arena, "image-a", Pages / 2);
        _b = GuestVm.Create(_arena, "image-b", Pages / 2);
        foreach (GuestVm vm in new[] { _a, _b })
        {
            vm.EnableSharing();
            vm.Back(new GuestPage(0), Pages / 2);
        }
        for (ulong g = 0; g < Pages / 2; g++)
        {
            FillUnique(_a, g, 1);
            FillUnique(_b, g, 2);
        }
        _scanner = new PageScanner(_arena, [_a, _b]);
    }

    [IterationSetup(Target = nameof(ScanSameImage))]
    public void SameImage()
    {
        _a!.Unshare(new GuestPage(0), Pages / 2);
        _b!.Unshare(new GuestPage(0), Pages / 2);
        for (ulong g = 0; g < Pages / 2; g++) FillUnique(_b, g, 1); // b's pages equal a's
    }

    [IterationSetup(Target = nameof(ScanDistinct))]
    public void Distinct()
    {
        _a!.Unshare(new GuestPage(0), Pages / 2);
        _b!.Unshare(new GuestPage(0), Pages / 2);
        for (ulong g = 0; g < Pages / 2; g++) FillUnique(_b, g, 2);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _a?.Dispose();
        _b?.Dispose();
        _arena?.Dispose();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Pages, Description = "scan, distinct pages (hash only), per page")]
    public int ScanDistinct() => _scanner!.ScanPass();

    [Benchmark(OperationsPerInvoke = Pages, Description = "scan, same image (half the pages merge), per page")]
    public int ScanSameImage()
    {
        int merged = _scanner!.ScanPass();
        if (merged < Pages / 2) throw new InvalidOperationException($"{merged} pages merged, not {Pages / 2}");
        return merged;
    }
}
