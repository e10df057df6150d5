// `pagelab inject`'s setup: one memory error into a small protected VM (16 pages under parity, 16 with a disk
// copy, 16 unprotected), reported to its recovery engine or left to the kernel, and the page checked byte by byte.
using PageLab.Core;
using PageLab.Core.Faults;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core.Recovery;

namespace PageLab.Lab.Demos;

/// <summary>What one injection did. <see cref="Page"/> is null for a frame no guest maps (parity-frame,
/// free-frame); the kernel path fills <see cref="StateBefore"/>, <see cref="FirstRead"/> and <see cref="Resolved"/>.</summary>
public sealed record InjectResult(
    ErrorKind Kind, string Target, int Offset, int MaskBytes, HostFrame Frame, GuestPage? Page,
    ErrorOutcome Outcome, TimeSpan Latency, bool Intact, FrameState FrameNow)
{
    public bool ViaKernel { get; init; }
    /// <summary>The page's state in the engine before the guest's read (the engine was not told).</summary>
    public GuestPageState? StateBefore { get; init; }
    /// <summary>The guest's first read of the page (the access that takes the SIGBUS).</summary>
    public byte FirstRead { get; init; }
    /// <summary>Kernel-delivered errors the SIGBUS handler resolved during the read (1 when it worked).</summary>
    public ulong Resolved { get; init; }

    /// <summary>The page reads what it must (its bytes if recovered, zeros if contained) and, via the kernel,
    /// the handler resolved exactly the one error.</summary>
    public bool Passed => Intact && (!ViaKernel || Resolved == 1);
}

public static class InjectDemo
{
    /// <summary>Where the error can hit: a page of each protection, a parity frame, a free frame.</summary>
    public static readonly string[] Targets = ["parity-page", "disk-page", "unprotected-page", "parity-frame", "free-frame"];

    private const ulong Pages = 48;

    /// <summary>Runs one injection. Via the kernel only the three page targets are possible (the kernel
    /// poisons a guest mapping): the caller refuses the others first.</summary>
    public static InjectResult Run(ErrorKind kind, string target, int seed, InjectionPath via)
    {
        if (Array.IndexOf(Targets, target) < 0) throw new ArgumentException($"'{target}' is not one of {string.Join(", ", Targets)}", nameof(target));
        if (via == InjectionPath.Kernel && target is "parity-frame" or "free-frame")
            throw new ArgumentException($"the kernel poisons a guest mapping, not {target}", nameof(target));
        using var arena = HostArena.Create(256, "pagelab-inject");
        using var vm = GuestVm.Create(arena, "vm", Pages, 16);
        vm.RefillPool();
        vm.Back(new GuestPage(0), Pages);
        for (ulong g = 0; g < Pages; g++) vm.Page(new GuestPage(g)).Fill((byte)(g + 1));
        string path = Path.Combine(Path.GetTempPath(), $"pagelab-inject-{Environment.ProcessId}");
        using var disk = new FileStream(path, FileMode.Create, FileAccess.ReadWrite, FileShare.Read, 4096, FileOptions.DeleteOnClose);
        for (ulong g = 16; g < 32; g++) disk.Write(vm.Page(new GuestPage(g)));
        disk.Flush();
        var engine = new RecoveryEngine(vm);
        engine.UseDiskFile(disk.SafeFileHandle);
        engine.Unrecoverable = g => $"the context using {g}";
        engine.Protect(Enumerable.Range(0, 16).Select(i => new GuestPage((ulong)i)).ToArray(), PageCategory.ReadMostly);
        engine.Protect(Enumerable.Range(16, 16).Select(i => new GuestPage((ulong)i)).ToArray(), PageCategory.CleanWithDiskCopy,
            g => ((long)g.Value - 16) * arena.PageSize);
        (int offset, byte[] mask) = MemoryErrorInjector.Pattern(kind, arena.PageSize, new Random(seed));
        GuestPage? page = target switch { "parity-page" => new GuestPage(5), "disk-page" => new GuestPage(20), "unprotected-page" => new GuestPage(40), _ => null };
        if (via == InjectionPath.Kernel) return ViaKernel(vm, engine, page!.Value, offset, mask, kind, target);
        HostFrame frame = target switch
        {
            "parity-frame" => new HostFrame(engine.ParityFrames.Keys.First()),
            "free-frame" => arena.Allocate(1) is var f ? Release(arena, f[0]) : default,
            _ => MemoryErrorInjector.IntoPage(vm, page!.Value, offset, mask)!.Value,
        };
        if (page is null) MemoryErrorInjector.IntoFrame(arena, frame, offset, mask);
        ErrorReport r = engine.Report(frame);
        bool intact = page is not GuestPage p || r.Outcome != ErrorOutcome.Recovered || vm.Page(p).IndexOfAnyExcept((byte)(p.Value + 1)) < 0;
        return new InjectResult(kind, target, offset, mask.Length, frame, page, r.Outcome, r.Latency, intact, arena.StateOf(frame));
    }

    // The kernel poisons the page and nobody is told; a guest read is the first to see it (the kernel's
    // SIGBUS), and the fault engine recovers or contains the page inside that fault.
    private static InjectResult ViaKernel(GuestVm vm, RecoveryEngine engine, GuestPage page, int offset, byte[] mask, ErrorKind kind, string target)
    {
        KernelErrorCounters before = KernelErrors.Counters;
        HostFrame bad = KernelErrorInjector.IntoPage(vm, page, offset, mask)!.Value;
        GuestPageState stateBefore = vm.StateOf(page);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        byte first = Volatile.Read(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(vm.Page(page)));
        TimeSpan took = clock.Elapsed;
        engine.CollectHandlerEvents();
        bool lost = vm.IsLost(page);
        bool intact = lost ? vm.Page(page).IndexOfAnyExcept((byte)0) < 0 : vm.Page(page).IndexOfAnyExcept((byte)(page.Value + 1)) < 0;
        KernelErrorCounters after = KernelErrors.Counters;
        return new InjectResult(kind, target, offset, mask.Length, bad, page, lost ? ErrorOutcome.Contained : ErrorOutcome.Recovered,
            took, intact, vm.Arena.StateOf(bad))
        {
            ViaKernel = true, StateBefore = stateBefore, FirstRead = first, Resolved = after.Resolved - before.Resolved,
        };
    }

    private static HostFrame Release(HostArena arena, HostFrame f)
    {
        arena.Release([f]);
        return f;
    }
}
