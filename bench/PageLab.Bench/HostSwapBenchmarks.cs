// Why: what a host swap-out and the swap-in of the same page cost (ESX's last resort when ballooning is not
// enough), next to the same syscalls done by hand and to a C floor of the same fault-driven mechanism; per page.
using BenchmarkDotNet.Attributes;
using Microsoft.Win32.SafeHandles;
using PageLab.Core;
using PageLab.Core.Faults;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Native;

namespace PageLab.Bench;

/// <summary>
/// One invocation swaps every page of a 256-page range out and back in. PageLab: <c>GuestVm.HostSwapOut(256)</c>
/// on a VM whose pages are all backed (per page, the engine makes the page a hole, pwrites its frame to the
/// VM's host swap file and punches the frame, which goes back to the arena), then one byte written to each
/// page through the guest view: a real fault that the native handler resolves by taking a free frame,
/// preading the page into it and mapping it (the write then re-runs and takes the kernel's minor fault).
/// The baseline does the same syscalls by hand on a <see cref="RawMemfd"/>, in the same order, with no fault:
/// per page an anonymous PROT_NONE mmap, a pwrite of the frame through the host view and a punch; then per
/// page a pread into the frame through the host view, a MAP_FIXED|MAP_SHARED mmap and the first touch.
/// The C floor (c/hostswap_floor.c) does the swap-out the same way and the swap-in from a C SIGSEGV handler,
/// so it also pays the signal delivery that PageLab's fault-driven swap-in cannot avoid. Both swap files are
/// opened the same way in the same directory (<see cref="Path.GetTempPath"/>) and deleted at once. Each row
/// has its own setup (so only its own handler is installed in its process, as in DemandFaultBenchmarks).
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
public unsafe class HostSwapBenchmarks
{
    private const int Pages = 256;
    private static readonly GuestPage Page0 = new(0);

    private RawMemfd? _raw;
    private SafeFileHandle? _swap;
    private int _swapFd;
    private HostArena? _arena;
    private GuestVm? _vm;

    [GlobalSetup(Target = nameof(RawSyscalls))]
    public void SetupRaw()
    {
        OpenRaw();
        RawSyscalls(); // the first round, as the PageLab setup runs one (and checks it)
        CheckContent(_raw!.Base, _raw.PageSize, "raw");
    }

    [GlobalSetup(Target = nameof(CFloor))]
    public void SetupCFloor()
    {
        OpenRaw();
        int rc = Baseline.SwapInstall(_raw!.Base, Pages, _raw.Fd, _raw.HostView, _swapFd);
        if (rc < 0) throw new ErrnoException("bl_swap_install: sigaction(SIGSEGV)", -rc);
        CFloor();
        CheckContent(_raw.Base, _raw.PageSize, "C floor");
    }

    [GlobalSetup(Target = nameof(GuestVmHostSwap))]
    public void SetupPageLab()
    {
        _arena = HostArena.Create(2 * Pages, "pagelab-bench-hostswap");
        _vm = GuestVm.Create(_arena, "hostswap", Pages, poolCapacity: 1); // pool left empty: swap-ins take free frames
        _vm.Back(Page0, Pages);
        Touch(_vm.Base, _arena.PageSize);
        Mark(_vm.Base, _arena.PageSize);
        FaultCounters before = _vm.Counters;
        GuestVmHostSwap();
        FaultCounters after = _vm.Counters;
        if (after.HostSwapOuts - before.HostSwapOuts != Pages || after.HostSwapIns - before.HostSwapIns != Pages)
            throw new InvalidOperationException($"a round swapped {after.HostSwapOuts - before.HostSwapOuts} pages out and " +
                                                $"{after.HostSwapIns - before.HostSwapIns} in, not {Pages} each");
        CheckContent(_vm.Base, _arena.PageSize, "PageLab");
    }

    [GlobalCleanup(Target = nameof(CFloor))]
    public void CleanupCFloor()
    {
        _ = Baseline.SwapUninstall(); // teardown: a failure leaves a disarmed handler that only chains
        Cleanup();
    }

    [GlobalCleanup(Targets = [nameof(RawSyscalls), nameof(GuestVmHostSwap)])]
    public void Cleanup()
    {
        _vm?.Dispose();
        _arena?.Dispose();
        _raw?.Dispose();
        _swap?.Dispose();
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Pages,
        Description = "raw: hole + pwrite + punch, then pread + mmap + touch, per page")]
    public void RawSyscalls()
    {
        RawMemfd raw = _raw!;
        long size = raw.PageSize;
        for (long g = 0; g < Pages; g++)
        {
            raw.Unmap(page: g, count: 1);
            raw.WriteFrame(_swapFd, frame: g, offset: g * size);
            raw.Punch(frame: g, count: 1);
        }
        byte* p = (byte*)raw.Base;
        for (long g = 0; g < Pages; g++)
        {
            raw.ReadFrame(_swapFd, frame: g, offset: g * size);
            raw.Map(page: g, count: 1, frame: g);
            // SAFETY: page g of the range was just mapped read-write onto frame g; the range lives until Cleanup.
            p[g * size] = (byte)g;
        }
    }

    /// <summary>C floor (c/hostswap_floor.c): the same swap-out, then one write per page, each faulting into a
    /// C handler that preads the page into its frame and maps it.</summary>
    [Benchmark(OperationsPerInvoke = Pages, Description = "C: hole + pwrite + punch, then SIGSEGV pread + mmap, per page")]
    public void CFloor()
    {
        int rc = Baseline.SwapRound();
        if (rc != 0) throw new ErrnoException("bl_swap_round", -rc);
    }

    [Benchmark(OperationsPerInvoke = Pages, Description = "HostSwapOut + swap-in fault, per page")]
    public void GuestVmHostSwap()
    {
        int n = _vm!.HostSwapOut(Pages);
        if (n != Pages) throw new InvalidOperationException($"HostSwapOut swapped {n} of {Pages} pages");
        Touch(_vm.Base, _vm.Arena.PageSize);
    }

    private void OpenRaw()
    {
        _raw = new RawMemfd(frames: Pages, rangePages: Pages);
        _raw.Map(page: 0, count: Pages, frame: 0);
        // Opened as GuestVm opens its host swap file (HostSwapFile): same directory, same options, name gone at once.
        string path = Path.Combine(Path.GetTempPath(), $"pagelab-bench-rawswap-{Environment.ProcessId}-{Guid.NewGuid():N}");
        _swap = File.OpenHandle(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None);
        File.Delete(path);
        _swapFd = (int)_swap.DangerousGetHandle();
        Touch(_raw.Base, _raw.PageSize);
        Mark(_raw.Base, _raw.PageSize);
    }

    /// <summary>Writes one byte, (byte)g, to each of the first <see cref="Pages"/> pages at <paramref name="at"/>.</summary>
    private static void Touch(nint at, int pageSize)
    {
        // SAFETY: both ranges are Pages pages long and live until Cleanup; a swapped-out guest page takes a
        // fault that the native handler resolves by swapping it in (the arena keeps Pages frames free for it).
        byte* p = (byte*)at;
        for (int g = 0; g < Pages; g++) p[(long)g * pageSize] = (byte)g;
    }

    private const int MarkAt = 8;
    private static byte MarkOf(int g) => (byte)(g ^ 0x5A);

    /// <summary>Writes a byte that only a swap round that keeps the content keeps: the touch writes offset 0 only.</summary>
    private static void Mark(nint at, int pageSize)
    {
        // SAFETY: as in Touch; called in setup while every page is mapped read-write.
        byte* p = (byte*)at;
        for (int g = 0; g < Pages; g++) p[(long)g * pageSize + MarkAt] = MarkOf(g);
    }

    /// <summary>After a round, every page must hold its touch byte and its mark, and zeros elsewhere.</summary>
    private static void CheckContent(nint at, int pageSize, string row)
    {
        for (int g = 0; g < Pages; g++)
        {
            // SAFETY: as in Touch; every page is mapped read-write after a round.
            var page = new ReadOnlySpan<byte>((byte*)at + (long)g * pageSize, pageSize);
            bool kept = page[0] == (byte)g && page[MarkAt] == MarkOf(g) && !page[1..MarkAt].ContainsAnyExcept((byte)0) &&
                        !page[(MarkAt + 1)..].ContainsAnyExcept((byte)0);
            if (!kept) throw new InvalidOperationException($"{row}: page {g} did not keep its content through a swap round");
        }
    }
}
