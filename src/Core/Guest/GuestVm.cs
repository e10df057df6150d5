// One VM's guest physical memory: a reserved address range whose page g is a view of host frame
// p2m[g]. This file holds its lifetime (create, dispose, the region use every call holds); reading
// pages and their state is GuestVm.Inspection.cs, changing them GuestVm.Paging.cs.
// Every call holds a use of the region (RegionUse), so a concurrent Dispose waits for it or makes it
// throw ObjectDisposedException: never a crash, never another VM's page.
using System.Buffers;
using System.Numerics;
using System.Runtime.InteropServices;
using PageLab.Core.Faults;
using PageLab.Core.Host;
using PageLab.Native;
using Microsoft.Win32.SafeHandles;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Guest;

/// <summary>The state of a guest page as the fault engine sees it (values match pagelab.h).</summary>
public enum GuestPageState : uint
{
    /// <summary>No frame; a touch takes a demand-zero fault.</summary>
    Unbacked = 0,
    Backed = 1,
    /// <summary>Backed but inaccessible until its first touch (working-set sampling).</summary>
    Sampled = 2,
    /// <summary>Backed read-only and protected (parity and/or a disk copy); a write takes a fault.</summary>
    Tracked = 3,
    /// <summary>Its frame holds an uncorrected error; inaccessible until recovered.</summary>
    Poisoned = 4,
    /// <summary>Host-swapped: no frame; the content is in the VM's host swap file until the next touch.</summary>
    Swapped = 5,
    /// <summary>Mapped read-only onto a shared frame (content-based sharing); a write takes a copy-on-write fault.</summary>
    Shared = 6,
}

public sealed unsafe partial class GuestVm : IDisposable
{
    private static int _nextId;

    private readonly HostArena _arena;
    private readonly RegionHandle _region;
    private readonly uint* _state;   // engine tables: valid while a RegionUse is held
    private readonly uint* _p2m;
    private readonly Lock _gate = new();

    private GuestVm(HostArena arena, string name, ulong pages, uint poolCapacity, int id, RegionHandle region, nint baseAddress)
    {
        _arena = arena;
        Name = name;
        PageCount = pages;
        PoolCapacity = poolCapacity;
        _region = region;
        Base = baseAddress;
        Id = id;
        FaultEngine.Check(Lib.RegionTables(region.Id, out _state, out _p2m), "pl_region_tables");
    }

    /// <summary>Reserves guest physical memory of <paramref name="pages"/> pages, all unbacked.</summary>
    /// <param name="poolCapacity">Frames the demand pool can hold for demand-zero faults.</param>
    /// <param name="hostSwap">Give the VM a host swap file (deleted at once, so it never outlives the
    /// process): with no frame to give, the fault handler swaps one of the VM's pages out instead of failing.</param>
    public static GuestVm Create(HostArena arena, string name, ulong pages, uint poolCapacity = 256, bool hostSwap = true)
    {
        ArgumentNullException.ThrowIfNull(arena);
        if (pages == 0 || pages > 1UL << 32)
            throw new ArgumentOutOfRangeException(nameof(pages), pages, $"VM '{name}' needs between 1 and {1UL << 32} pages");
        if (poolCapacity == 0)
            throw new ArgumentOutOfRangeException(nameof(poolCapacity), poolCapacity, "the demand pool needs room for at least one frame");
        FaultEngine.EnsureInstalled();
        int id = Interlocked.Increment(ref _nextId);
        // A reference on the arena for the region's whole life (RegionHandle takes it over): the arena's
        // tables, host view and memfd outlive the region even if the arena is disposed meanwhile.
        ArenaHandle arenaHandle = arena.TakeReference();
        RegionHandle handle;
        nint b;
        try
        {
            FaultEngine.Check(Lib.RegionCreate(arenaHandle.DangerousGetHandle(), id, pages, poolCapacity, out int region, out b),
                $"reserving {pages} guest pages for VM '{name}'");
            handle = new RegionHandle(region, arenaHandle);
        }
        catch
        {
            arenaHandle.DangerousRelease();
            throw;
        }
        try
        {
            var vm = new GuestVm(arena, name, pages, poolCapacity, id, handle, b);
            if (hostSwap) vm.UseHostSwapFile(HostSwapFile.Open(name));
            return vm;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    public int Id { get; }
    public string Name { get; }
    public ulong PageCount { get; }
    public uint PoolCapacity { get; }
    public HostArena Arena => _arena;
    public bool IsDisposed => _region.IsClosed;

    /// <summary>Start of the guest physical memory range. Valid until <see cref="Dispose"/>; afterwards the
    /// range stays reserved and inaccessible for the process's life (no other VM is ever placed there), so
    /// a stale pointer or span into it faults rather than reach another VM's page.</summary>
    public nint Base { get; }

    public PageRun Pages => new(new GuestPage(0), PageCount);

    /// <summary>Destroys the region once no call is using it: its guest memory is quarantined (inaccessible,
    /// never reused) and every frame goes back to the arena (a poisoned one is retired). Safe to call from
    /// any thread, any number of times.</summary>
    public void Dispose() => _region.Dispose();

    internal void UseHostSwapFile(SafeFileHandle file)
    {
        using RegionUse use = Use();
        _region.KeepOpen(file);
        FaultEngine.Check(Lib.SetHostSwap(use.Id, file.DangerousGetHandle()), $"{Name}: setting the host swap file");
        file.Dispose(); // the region's reference keeps it open until the region is gone
    }

    // A buffer the engine reads while it holds this VM's region lock must not lie in this VM's guest
    // memory: touching it there would fault, and the fault would wait on that same lock. Such a buffer
    // (an odd but legal argument) is copied first.
    internal ReadOnlySpan<T> OutsideGuestMemory<T>(ReadOnlySpan<T> span) where T : unmanaged
    {
        fixed (T* p = span)
        {
            long start = (long)p, end = start + (long)span.Length * sizeof(T);
            long guestStart = Base, guestEnd = guestStart + (long)PageCount * _arena.PageSize;
            return start < guestEnd && end > guestStart ? span.ToArray() : span;
        }
    }

    internal RegionUse Use()
    {
        try { return new RegionUse(_region); }
        catch (ObjectDisposedException) { throw new ObjectDisposedException(nameof(GuestVm), $"VM '{Name}' has been disposed"); }
    }

    private void CheckRange(GuestPage first, ulong count)
    {
        ObjectDisposedException.ThrowIf(_region.IsClosed, this);
        if (count == 0) throw new ArgumentOutOfRangeException(nameof(count), count, $"{Name}: a page range is never empty");
        if (first.Value >= PageCount || count > PageCount - first.Value)
            throw new ArgumentOutOfRangeException(nameof(first), first,
                $"{Name}: pages {first.Value}..{first.Value + count - 1} pass the VM's last page {PageCount - 1}");
    }
}
