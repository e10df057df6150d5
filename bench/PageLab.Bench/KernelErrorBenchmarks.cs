// Why: what a memory error delivered by the kernel costs from the guest's access to its recovery. The
// kernel poisons a parity-protected page (a userfaultfd poison marker) and the guest's read takes the
// SIGBUS, which the engine resolves inside the fault (rebuild from parity, hash check, remap, retire);
// against the protection-based path (the engine poisons the page with mprotect and the read takes a
// SIGSEGV resolved the same way) and a C floor (the same poison calls, and a SIGBUS handler that only
// maps a fresh frame).
using System.Runtime.CompilerServices;
using BenchmarkDotNet.Attributes;
using PageLab.Core;
using PageLab.Core.Faults;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core.Recovery;
using PageLab.Native;

namespace PageLab.Bench;

/// <summary>
/// Each recovery retires the replaced frame, so each iteration runs <see cref="Rounds"/> rounds on a VM
/// made for it (outside the measurement) whose arena has a free frame for every round; the handler takes
/// them itself. Each row runs in its own process, so the C floor's SIGBUS handler and libpagelab's never
/// sit in front of each other.
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
[InvocationCount(Rounds)]
public unsafe class KernelErrorBenchmarks
{
    private const int Rounds = 8192; // >= 100 ms per iteration for the C row too
    private const int K = 8;

    private HostArena? _arena;
    private GuestVm? _vm;
    private RawMemfd? _raw;
    private readonly GuestPage _page = new(1);
    private readonly byte[] _mask = [0x81, 0x42];

    /// <summary>Why this machine cannot run the class (null if it can): every row then does nothing and
    /// says so, rather than failing a whole benchmark run (CI's dry run) on an older kernel.</summary>
    private static readonly string? Skip = !OperatingSystem.IsLinux() ? KernelErrorInjector.WindowsReason
        : KernelErrorInjector.Available.UffdPoison ? null : KernelErrorInjector.Available.UffdPoisonReason;

    private static void SaySkipped() => Console.WriteLine($"// KernelErrorBenchmarks skipped (every row measures nothing): {Skip}");

    [GlobalSetup(Target = nameof(C))]
    public void SetupC()
    {
        if (Skip is not null) { SaySkipped(); return; }
        _raw = new RawMemfd(frames: 2, rangePages: 1);
        new Span<byte>((void*)_raw.HostView, 2 * _raw.PageSize).Fill(0x5A);
        int rc = Baseline.SigbusInit(_raw.Base, _raw.Fd);
        if (rc != 0) throw new ErrnoException("bl_sigbus_init (userfaultfd with UFFD_FEATURE_POISON, sigaction)", -rc);
    }

    [GlobalCleanup(Target = nameof(C))]
    public void CleanupC()
    {
        if (_raw is not null) _ = Baseline.SigbusUninstall(); // teardown: a failure leaves a handler that only chains
        _raw?.Dispose();
    }

    [IterationSetup(Targets = [nameof(Kernel), nameof(Protection)])]
    public void NewVm()
    {
        if (Skip is not null) { SaySkipped(); return; }
        DisposeVm();
        _arena = HostArena.Create(256 + Rounds, "pagelab-bench-kernel-error");
        _vm = GuestVm.Create(_arena, "kerr", 64, 16);
        _vm.Back(new GuestPage(0), 64);
        for (ulong g = 0; g < 64; g++) _vm.Page(new GuestPage(g)).Fill((byte)g);
        var engine = new RecoveryEngine(_vm, new ProtectionPolicy { GroupSize = K });
        engine.Protect(Enumerable.Range(0, K).Select(i => new GuestPage((ulong)i)).ToArray(), PageCategory.ReadMostly);
    }

    [GlobalCleanup(Targets = [nameof(Kernel), nameof(Protection)])]
    public void DisposeVm()
    {
        _vm?.Dispose();
        _arena?.Dispose();
    }

    /// <summary>C floor: poison marker (5 calls), read → SIGBUS → handler maps a fresh frame → read again.</summary>
    [Benchmark(Baseline = true, Description = "C: poison marker + SIGBUS + remap a fresh frame")]
    public int C()
    {
        if (Skip is not null) return 0;
        int got = Baseline.SigbusRound();
        return got == 0x5A ? got : throw new InvalidOperationException($"bl_sigbus_round: {got}");
    }

    /// <summary>Kernel path: poison marker + flipped bytes behind it; the guest read takes the SIGBUS and the
    /// handler probes the mapping, rebuilds the page from parity into a fresh frame, checks its hash,
    /// remaps it and retires the bad frame; the read re-runs.</summary>
    [Benchmark(Description = "PageLab: kernel poison + SIGBUS -> recovered")]
    public int Kernel()
    {
        if (Skip is not null) return 0;
        _ = KernelErrorInjector.IntoPage(_vm!, _page, 64, _mask, onlyIfProtected: true, KernelInjector.UffdPoison);
        return Read();
    }

    /// <summary>Protection path: the engine poisons the page (mprotect NONE + flipped bytes); the guest read
    /// takes a SIGSEGV that the handler resolves the same way.</summary>
    [Benchmark(Description = "PageLab: protection poison + SIGSEGV -> recovered")]
    public int Protection()
    {
        if (Skip is not null) return 0;
        _ = MemoryErrorInjector.IntoPage(_vm!, _page, 64, _mask, onlyIfProtected: true);
        return Read();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private int Read()
    {
        byte b = Volatile.Read(ref _vm!.Page(_page)[64]);
        return b == 1 ? b : throw new InvalidOperationException($"read {b} after recovery, not 1");
    }
}
