// A guest process: its virtual address space, translated in software by its page table (the guest OS
// model owns the physical pages behind it), and the exception for a process the guest terminated.
namespace PageLab.Core.GuestOs;

/// <summary>A guest process: a virtual address space translated in software by its page table.</summary>
public sealed class GuestProcess
{
    internal GuestProcess(GuestOperatingSystem os, int pid, string name, ulong virtualPages, bool pinned, bool balloon)
    {
        IsBalloon = balloon;
        Referenced = new bool[virtualPages];
        Age = new byte[virtualPages];
        Os = os;
        Pid = pid;
        Name = name;
        VirtualPages = virtualPages;
        Pinned = pinned;
        Pte = new long[virtualPages];
        Accessed = new bool[virtualPages];
    }

    public GuestOperatingSystem Os { get; }
    public int Pid { get; }
    public string Name { get; }
    public ulong VirtualPages { get; }
    /// <summary>Pinned pages are never paged out (kernel-like memory).</summary>
    public bool Pinned { get; }
    /// <summary>The first guest page of the contiguous run reserved for this process
    /// (<see cref="GuestOperatingSystem.SpawnPinnedRun"/>), or null.</summary>
    public ulong? RunFirst { get; internal init; }
    /// <summary>The balloon driver's process (its pages are not part of the working set).</summary>
    public bool IsBalloon { get; }
    public bool Killed { get; internal set; }
    public ulong Resident { get; internal set; }
    /// <summary>How many of this process's pages the guest OS has paged out so far.</summary>
    public ulong SwappedOut { get; internal set; }
    /// <summary>Pages the process gave back (unmapped) so far.</summary>
    public ulong Releases { get; internal set; }

    /// <summary>0 = never used; g+1 = resident at guest page g; -(slot+1) = in swap slot.</summary>
    internal long[] Pte { get; }
    internal bool[] Accessed { get; }
    /// <summary>Used since the last working-set report (the clock hand clears <see cref="Accessed"/>,
    /// not this).</summary>
    internal bool[] Referenced { get; }
    /// <summary>Working-set reports since the page was last used (saturates at 255).</summary>
    internal byte[] Age { get; }

    internal ulong? ResidentPage(ulong vpn)
    {
        CheckVpn(vpn);
        return Pte[vpn] > 0 ? (ulong)(Pte[vpn] - 1) : null;
    }

    public bool IsResident(ulong vpn) => ResidentPage(vpn) is not null;
    public bool IsSwapped(ulong vpn) { CheckVpn(vpn); return Pte[vpn] < 0; }

    /// <summary>The bytes of a virtual page, made resident first. Loads and stores on the span are real
    /// accesses to guest physical memory (and take a demand-zero fault where the host has no frame yet).</summary>
    public Span<byte> Page(ulong vpn)
    {
        CheckVpn(vpn);
        return Os.Vm.Page(new GuestPage(Os.EnsureResident(this, vpn)));
    }

    /// <summary>Marks a resident page accessed without reading it (what a periodic touch does to the
    /// accessed bit). Returns false if the page is not resident.</summary>
    public bool Touch(ulong vpn)
    {
        CheckVpn(vpn);
        if (Pte[vpn] <= 0) return false;
        Accessed[vpn] = true;
        return true;
    }

    public void Release(ulong vpn)
    {
        CheckVpn(vpn);
        Os.Release(this, vpn);
    }

    private void CheckVpn(ulong vpn)
    {
        if (vpn >= VirtualPages)
            throw new ArgumentOutOfRangeException(nameof(vpn), vpn, $"process '{Name}' has virtual pages 0..{VirtualPages - 1}");
    }
}

public sealed class GuestProcessKilledException(GuestProcess p)
    : InvalidOperationException($"guest process '{p.Name}' (pid {p.Pid}) of {p.Os.Vm.Name} was terminated")
{
    public GuestProcess Process { get; } = p;
}
