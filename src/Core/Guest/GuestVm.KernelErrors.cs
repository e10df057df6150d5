// GuestVm's hook into the kernel-backed injectors (c/mce.c): the kernel, not the engine, is the first to
// know the page is bad; the guest's next access takes its SIGBUS.
using PageLab.Core.Faults;
using PageLab.Core.Host;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Guest;

public sealed unsafe partial class GuestVm
{
    /// <summary>True if the page's guest mapping fails a read because the kernel poisoned it (a poison marker,
    /// or hardware poison) and no guest access has had the engine handle it yet. Its frame is then not its
    /// content: whatever reads the frame through the host view (device I/O, a copy) must read the page
    /// through its guest mapping instead, whose fault recovers or contains it.</summary>
    public bool IsKernelPoisoned(GuestPage page)
    {
        CheckRange(page, 1);
        using RegionUse use = Use();
        int rc = Lib.PageKernelPoisoned(use.Id, page.Value);
        FaultEngine.Check(rc, $"{Name}: kernel poison of {page}");
        return rc != 0;
    }

    /// <summary>Makes the page bad through the kernel (<paramref name="how"/>) without telling the engine's
    /// tables: the page stays Backed or Tracked until a guest access takes the SIGBUS. With a poison marker
    /// <paramref name="mask"/> is XORed into the frame at <paramref name="offset"/> behind the marker.
    /// Returns the frame that is now bad, or null (nothing changed) if the page is not Backed or Tracked,
    /// or, with <paramref name="onlyIfProtected"/>, not Tracked at that instant.</summary>
    internal HostFrame? KernelInject(GuestPage page, int offset, ReadOnlySpan<byte> mask, bool onlyIfProtected, KernelInjector how)
    {
        CheckRange(page, 1);
        mask = OutsideGuestMemory(mask);
        using RegionUse use = Use();
        fixed (byte* m = mask)
        {
            int rc = Lib.KernelInject(use.Id, page.Value, checked((uint)offset), m, (uint)mask.Length, onlyIfProtected ? 1 : 0, (int)how, out uint hit);
            if (rc == Lib.ESTATE) return null;
            FaultEngine.Check(rc, $"{Name}: kernel injection ({how}) into {page}");
            return new HostFrame(hit);
        }
    }
}
