// Error injection through the kernel: the page is made bad under its guest mapping (a userfaultfd poison
// marker, or a hardware poison of the physical page) and nobody is told; the guest's next access takes the
// kernel's SIGBUS, and the fault engine recovers or contains the page inside that fault.
using PageLab.Core.Faults;
using PageLab.Core.Guest;
using PageLab.Core.Host;

namespace PageLab.Core.Recovery;

/// <summary>How a campaign or `inject` makes an error: through page protection and a report (the engine
/// knows at once), or through the kernel (the guest's access is the first to see it).</summary>
public enum InjectionPath { Protection, Kernel }

public static class KernelErrorInjector
{
    /// <summary>What this process can use, each with the reason where not.</summary>
    public static KernelInjectors Available => KernelErrors.Injectors;

    /// <summary>Throws <see cref="PlatformNotSupportedException"/> naming why, if no kernel injector is here.</summary>
    public static KernelInjector Require()
    {
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException($"kernel-delivered memory errors: {WindowsReason}");
        return Available.Preferred ?? throw new PlatformNotSupportedException($"no kernel injector here: {Available.Unavailable}");
    }

    /// <summary>Why Windows has no equivalent (for `info`, the docs and skipped tests).</summary>
    public const string WindowsReason =
        "Windows has no user-mode way to poison a page (no userfaultfd, no MADV_HWPOISON), and it reports uncorrectable " +
        "memory errors as machine checks through WHEA, which retires the page or bugchecks: no process receives an " +
        "exception for a page it could recover";

    /// <summary>Makes the page bad through the kernel; the error mask is XORed into its frame behind a poison
    /// marker. Nothing is reported: the guest's next access is the first to see the error. Returns the frame
    /// that is now bad, or null if the page has no frame or is sampled or poisoned at that instant (or, with
    /// <paramref name="onlyIfProtected"/>, is not protected).</summary>
    public static HostFrame? IntoPage(GuestVm vm, GuestPage page, int offset, ReadOnlySpan<byte> mask, bool onlyIfProtected = false,
                                      KernelInjector? how = null)
    {
        if (mask.IsEmpty || mask.IndexOfAnyExcept((byte)0) < 0)
            throw new ArgumentException($"the error mask ({mask.Length} bytes) flips no bit", nameof(mask));
        if (offset < 0 || offset > vm.Arena.PageSize - mask.Length)
            throw new ArgumentOutOfRangeException(nameof(offset), offset, $"a {mask.Length}-byte error at offset {offset} does not fit a {vm.Arena.PageSize}-byte page");
        return vm.KernelInject(page, offset, mask, onlyIfProtected, how ?? Require());
    }
}
