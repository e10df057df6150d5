// Why: the costs of transparent recovery. A write fault on a parity-covered page against the plain C
// SIGSEGV + mprotect round trip (goal <= 1.3x); recovering one page for k = 4, 8, 16 (goal <= 8 us
// p50 at k = 8) against a C floor doing the same syscalls and page passes; and from disk.
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core.Recovery;
using PageLab.Native;

namespace PageLab.Bench;

/// <summary>
/// Each row's faults pass through its own handler only. The C row's setup installs the C handler (after
/// the runtime's, chaining to it) and creates no PageLab VM, so libpagelab's handler is not installed in
/// that process; the PageLab row's setup creates the VM (installing libpagelab's handler) and never
/// installs the C one. BenchmarkDotNet runs each row in its own process; under an in-process toolchain
/// the C row's cleanup uninstalls its handler, and if PageLab's was installed first the C handler sits
/// in front of it only while the C row runs. (Before this, one setup installed the C handler after
/// PageLab's, so every PageLab fault went through the C handler's range check and chain first.)
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
public unsafe class WriteFaultBenchmarks
{
    private HostArena? _arena;
    private GuestVm? _vm;
    private RawMemfd? _raw;
    private readonly GuestPage[] _page = [new(3)];

    [GlobalSetup(Target = nameof(C))]
    public void SetupC()
    {
        _raw = new RawMemfd(frames: 4, rangePages: 4);
        _raw.Map(page: 0, count: 4, frame: 0);
        int rc = Baseline.Install(_raw.Base, (nuint)(4 * _raw.PageSize));
        if (rc < 0) throw new ErrnoException("bl_install: sigaction(SIGSEGV)", -rc);
    }

    [GlobalCleanup(Target = nameof(C))]
    public void CleanupC()
    {
        _ = Baseline.Uninstall(); // teardown: a failure leaves a disarmed handler that only chains
        _raw?.Dispose();
    }

    [GlobalSetup(Target = nameof(PageLab))]
    public void SetupPageLab()
    {
        _arena = HostArena.Create(256, "pagelab-bench-writefault");
        _vm = GuestVm.Create(_arena, "wf", 64, 16);
        _vm.Back(new GuestPage(0), 64);
        var engine = new RecoveryEngine(_vm);
        engine.Protect(Enumerable.Range(0, 8).Select(i => new GuestPage((ulong)i)).ToArray(), PageCategory.ReadMostly);
    }

    [GlobalCleanup(Target = nameof(PageLab))]
    public void CleanupPageLab()
    {
        _vm?.Dispose();
        _arena?.Dispose();
    }

    /// <summary>C: mprotect read-only, then a write that faults into a C handler that mprotects it back.</summary>
    [Benchmark(Baseline = true, Description = "C: mprotect RO + write fault + mprotect RW")]
    public void C() => Baseline.RoundTrip((byte*)_raw!.Base + _raw.PageSize);

    /// <summary>PageLab: re-cover the page (mprotect RO, hash, XOR into parity), then a managed write that
    /// faults into the engine (hash check, XOR out of parity, mprotect RW).</summary>
    [Benchmark(Description = "PageLab: protect + write fault on a parity page")]
    public void PageLab()
    {
        _vm!.Protect(_page, []);
        _vm.Page(_page[0])[0]++;
    }
}

/// <summary>
/// A recovery retires the replaced frame for good (the engine never hands a bad frame out again), so the
/// PageLab row cannot reuse it as the next fresh frame. Each iteration runs <see cref="Rounds"/> rounds on
/// a VM made for it (outside the measurement) whose arena holds a fresh Held frame for every round.
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
[InvocationCount(Rounds)]
public unsafe class RecoveryLatencyBenchmarks
{
    private const int Rounds = 16384;

    [Params(4, 8, 16)]
    public int K { get; set; }

    private HostArena? _arena;
    private GuestVm? _vm;
    private HostFrame[] _spares = [];
    private int _next;
    private readonly GuestPage _page = new(1);
    private readonly byte[] _mask = [0x81, 0x42];
    private RawMemfd _raw = null!;

    [GlobalSetup]
    public void Setup() => _raw = new RawMemfd(frames: K + 1 + Rounds, rangePages: 1);

    /// <summary>The floor starts each iteration as the PageLab row does: the group set up again and a
    /// fresh (punched) frame for every round.</summary>
    [IterationSetup(Target = nameof(C))]
    public void NewFloor()
    {
        int rc = Baseline.RecoveryInit(_raw.Base, _raw.HostView, _raw.Fd, (uint)K, (uint)(K + 1 + Rounds));
        if (rc != 0) throw new ErrnoException("bl_recovery_init: mmap or fallocate", -rc);
    }

    [IterationSetup(Target = nameof(Recover))]
    public void NewVm()
    {
        _vm?.Dispose();
        _arena?.Dispose();
        _arena = HostArena.Create(256 + Rounds, "pagelab-bench-recovery");
        _vm = GuestVm.Create(_arena, "rec", 64, 16);
        _vm.Back(new GuestPage(0), 64);
        for (ulong g = 0; g < 64; g++) _vm.Page(new GuestPage(g)).Fill((byte)g);
        var engine = new RecoveryEngine(_vm, new ProtectionPolicy { GroupSize = K });
        engine.Protect(Enumerable.Range(0, K).Select(i => new GuestPage((ulong)i)).ToArray(), PageCategory.ReadMostly);
        _spares = _arena.Allocate(Rounds);
        _next = 0;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _vm?.Dispose();
        _arena?.Dispose();
        _raw.Dispose();
    }

    /// <summary>The C floor of the same round (c/recovery_floor.c): mprotect NONE and XOR the mask into
    /// the frame, then rebuild the page from parity and k-1 members into a fresh frame, hash-check it,
    /// map it read-only with one mmap and punch the bad frame. The same three syscalls, page allocation
    /// and page passes as the PageLab row.</summary>
    [Benchmark(Baseline = true, Description = "C: poison + rebuild (k pages) + hash + mmap + punch")]
    public int C()
    {
        fixed (byte* mask = _mask)
        {
            int rc = Baseline.RecoveryRound(mask, 64, (uint)_mask.Length);
            return rc == 0 ? rc : throw new InvalidOperationException($"bl_recovery_round: {rc}");
        }
    }

    /// <summary>Inject (poison) then recover: rebuild from parity into a fresh frame, hash-check, remap;
    /// the replaced frame is retired.</summary>
    [Benchmark(Description = "inject + recover from parity")]
    public void Recover()
    {
        HostFrame bad = _vm!.Translate(_page)!.Value;
        _vm.Inject(_page, 64, _mask, onlyIfProtected: false);
        if (_vm.Recover(_page, bad, _spares[_next++]) != RecoverResult.Recovered) throw new InvalidOperationException("not recovered");
    }
}

/// <summary>As in <see cref="RecoveryLatencyBenchmarks"/>, each refill retires the replaced frame, so each
/// iteration runs <see cref="Rounds"/> refills on a VM made for it with a fresh Held frame for every round.</summary>
[MemoryDiagnoser]
[MedianColumn]
[InvocationCount(Rounds)]
public class DiskRefillBenchmarks
{
    private const int Rounds = 16384;

    private HostArena? _arena;
    private GuestVm? _vm;
    private HostFrame[] _spares = [];
    private int _next;
    private readonly GuestPage _page = new(2);
    private readonly byte[] _mask = [0xFF];
    private FileStream _disk = null!;
    private readonly byte[] _buffer = new byte[4096];

    [GlobalSetup]
    public void Setup()
    {
        string path = Path.Combine(Path.GetTempPath(), $"pagelab-bench-disk-{Environment.ProcessId}");
        _disk = new FileStream(path, FileMode.Create, FileAccess.ReadWrite, FileShare.Read, 4096, FileOptions.DeleteOnClose);
        var page = new byte[Environment.SystemPageSize];
        for (ulong g = 0; g < 8; g++)
        {
            Array.Fill(page, (byte)(g + 7));
            _disk.Write(page);
        }
        _disk.Flush();
    }

    [IterationSetup(Target = nameof(Refill))]
    public void NewVm()
    {
        _vm?.Dispose();
        _arena?.Dispose();
        _arena = HostArena.Create(128 + Rounds, "pagelab-bench-disk");
        _vm = GuestVm.Create(_arena, "disk", 8, 8);
        _vm.Back(new GuestPage(0), 8);
        for (ulong g = 0; g < 8; g++) _vm.Page(new GuestPage(g)).Fill((byte)(g + 7)); // what the disk copy holds
        var engine = new RecoveryEngine(_vm);
        engine.UseDiskFile(_disk.SafeFileHandle);
        engine.Protect(Enumerable.Range(0, 8).Select(i => new GuestPage((ulong)i)).ToArray(), PageCategory.CleanWithDiskCopy,
            g => (long)g.Value * _arena.PageSize);
        _spares = _arena.Allocate(Rounds);
        _next = 0;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _vm?.Dispose();
        _arena?.Dispose();
        _disk.Dispose();
    }

    [Benchmark(Baseline = true, Description = "raw: pread of one page")]
    public int Raw() => RandomAccess.Read(_disk.SafeFileHandle, _buffer, 2 * 4096);

    [Benchmark(Description = "inject + refill from disk")]
    public void Refill()
    {
        HostFrame bad = _vm!.Translate(_page)!.Value;
        _vm.Inject(_page, 0, _mask, onlyIfProtected: false);
        if (_vm.Recover(_page, bad, _spares[_next++]) != RecoverResult.Recovered) throw new InvalidOperationException("not recovered");
    }
}

/// <summary>Why: what parity costs a running guest: the same workload with parity off (baseline) and on;
/// read-mostly (1 write in 100,000 or in 1000 accesses) and write-heavy (1 in 10). Goal: read-mostly <= 3% slower.</summary>
[MedianColumn]
public class ParityOverheadBenchmarks
{
    private const int Pages = 512;
    private const int Accesses = 20_000;

    [Params(100_000, 1000, 10)]
    public int OneWriteIn { get; set; }

    private HostArena _arena = null!;
    private GuestVm _plain = null!, _covered = null!;
    private RecoveryEngine _engine = null!;

    [GlobalSetup]
    public void Setup()
    {
        _arena = HostArena.Create(2 * Pages + 256, "pagelab-bench-parity-overhead");
        _plain = GuestVm.Create(_arena, "plain", Pages, 8);
        _covered = GuestVm.Create(_arena, "covered", Pages, 8);
        _plain.Back(new GuestPage(0), Pages);
        _covered.Back(new GuestPage(0), Pages);
        _engine = new RecoveryEngine(_covered);
        _engine.Protect(Enumerable.Range(0, Pages).Select(i => new GuestPage((ulong)i)).ToArray(), PageCategory.ReadMostly);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _plain.Dispose();
        _covered.Dispose();
        _arena.Dispose();
    }

    [Benchmark(Baseline = true, Description = "parity off")]
    public long Off() => Workload(_plain);

    /// <summary>Includes the background protector re-covering written pages once per run.</summary>
    [Benchmark(Description = "parity on")]
    public long On()
    {
        long sum = Workload(_covered);
        _engine.Reprotect();
        return sum;
    }

    private long Workload(GuestVm vm)
    {
        long sum = 0;
        uint x = 12345;
        for (int i = 0; i < Accesses; i++)
        {
            x = x * 1664525 + 1013904223;
            Span<byte> page = vm.Page(new GuestPage(x % Pages));
            ReadOnlySpan<long> words = MemoryMarshal.Cast<byte, long>(page);
            for (int w = 0; w < words.Length; w += 8) sum += words[w];       // read the page
            if (i % OneWriteIn == 0) page[(int)(x >> 20) % page.Length]++;
        }
        return sum;
    }
}
