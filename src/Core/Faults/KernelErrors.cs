// Memory errors the kernel delivers (SIGBUS) and the kernel-backed injectors, as the fault engine sees
// them: which injectors this process can use (and why not), and what the SIGBUS handler has done.
using System.Text;
using PageLab.Native;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Faults;

/// <summary>How a kernel-backed injection makes a page bad.</summary>
public enum KernelInjector
{
    /// <summary>A userfaultfd poison marker (UFFDIO_POISON, Linux 6.6+) on the page's guest mapping only;
    /// its frame's bytes are flipped behind it. The next access raises SIGBUS (BUS_ADRERR without
    /// CONFIG_MEMORY_FAILURE, BUS_MCEERR_AR with it).</summary>
    UffdPoison = Lib.KernelUffdPoison,
    /// <summary>MADV_HWPOISON: the physical page itself (root and CONFIG_MEMORY_FAILURE); every mapping of
    /// it raises BUS_MCEERR_AR.</summary>
    HwPoison = Lib.KernelHwPoison,
}

/// <summary>Which kernel injectors this process can use, each with what it is or why it is not here.</summary>
public sealed record KernelInjectors(bool UffdPoison, string UffdPoisonReason, bool HwPoison, string HwPoisonReason)
{
    /// <summary>The injector a kernel campaign uses: a poison marker where there is one (it touches only the
    /// guest mapping, so it never poisons the host's own view), else the hardware poison, else none.</summary>
    public KernelInjector? Preferred => UffdPoison ? KernelInjector.UffdPoison : HwPoison ? KernelInjector.HwPoison : null;

    /// <summary>Why no kernel injector is available (null if one is).</summary>
    public string? Unavailable => Preferred is null ? $"{UffdPoisonReason}; {HwPoisonReason}" : null;
}

/// <summary>What the SIGBUS handler did, process-wide, since the engine was loaded.</summary>
/// <param name="ActionRequired">BUS_MCEERR_AR on guest pages, recovered or contained in the handler.</param>
/// <param name="PoisonMarkers">BUS_ADRERR / BUS_OBJERR from a poison marker on guest pages, recovered or contained.</param>
/// <param name="ActionOptionalQueued">BUS_MCEERR_AO on guest pages: made Poisoned and queued for the recovery engine.</param>
/// <param name="NothingToDo">SIGBUS on a guest page another thread had already replaced (the access re-ran).</param>
/// <param name="Chained">SIGBUS passed on to the runtime's handler (not a guest page, or not a memory error).</param>
/// <param name="ActionOptionalDeferred">BUS_MCEERR_AO that arrived while the region's lock was taken (possibly by
/// the very thread it interrupted): left for the next collection of handler events, which handles it.</param>
public readonly record struct KernelErrorCounters(ulong ActionRequired, ulong PoisonMarkers, ulong ActionOptionalQueued, ulong NothingToDo, ulong Chained,
    ulong ActionOptionalDeferred)
{
    /// <summary>Kernel-delivered errors the handler resolved (AR and poison markers).</summary>
    public ulong Resolved => ActionRequired + PoisonMarkers;
}

public static unsafe class KernelErrors
{
    private static KernelInjectors? _injectors;

    /// <summary>Probed once (opening the process's userfaultfd if there is one).</summary>
    public static KernelInjectors Injectors => _injectors ??= Probe();

    private static KernelInjectors Probe()
    {
        const int Cap = 400;
        byte* uffd = stackalloc byte[Cap];
        byte* hw = stackalloc byte[Cap];
        int avail = Lib.KernelInjectors(uffd, hw, Cap);
        return new KernelInjectors((avail & Lib.KernelUffdPoison) != 0, Text(uffd, Cap), (avail & Lib.KernelHwPoison) != 0, Text(hw, Cap));
    }

    private static string Text(byte* s, int cap) => Encoding.UTF8.GetString(new ReadOnlySpan<byte>(s, cap).Slice(0, Math.Max(0, new ReadOnlySpan<byte>(s, cap).IndexOf((byte)0))));

    public static KernelErrorCounters Counters
    {
        get
        {
            Lib.KernelErrorCounts c;
            int kept = Lib.KernelErrorCountsGet((ulong*)&c, Lib.KernelErrorCounts.Count); // nothing can fail
            if (kept != Lib.KernelErrorCounts.Count)
                throw new InvalidOperationException($"libpagelab keeps {kept} kernel-error counts, this build reads {Lib.KernelErrorCounts.Count}: a mismatched library");
            return new KernelErrorCounters(ActionRequired: c.ActionRequired, PoisonMarkers: c.PoisonMarkers,
                ActionOptionalQueued: c.ActionOptionalQueued, NothingToDo: c.NothingToDo, Chained: c.Chained,
                ActionOptionalDeferred: c.ActionOptionalDeferred);
        }
    }

    /// <summary>Flags of the runtime's SIGBUS handler PageLab chains to (null before install, or on Windows).</summary>
    public static long? PreviousHandlerFlags => Lib.PreviousBusFlags() is var f and >= 0 ? f : null;
}
