// The fault engine's OS-call failure injector (c/osfail.c) and its table checks (c/check.c): every OS
// call the engine makes can be made to fail, the Nth of a kind or at random with a seed, and reads and
// writes made short, so a test or the anomaly campaign sees what a failing call leaves behind.
using System.Text;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Faults;

/// <summary>A kind of OS call the engine's OS layer makes (PL_OS_* in pagelab.h).</summary>
public enum OsCall
{
    /// <summary>mmap (Windows: MapViewOfFile3, VirtualAlloc): a guest page's view, a hole, a reservation, tables.</summary>
    Map,
    /// <summary>munmap (Windows: UnmapViewOfFile2, VirtualFree).</summary>
    Unmap,
    /// <summary>mprotect (Windows: VirtualProtect).</summary>
    Protect,
    /// <summary>madvise.</summary>
    Advise,
    /// <summary>fallocate(PUNCH_HOLE): a frame back to zero.</summary>
    Discard,
    /// <summary>pread: disk copies, host swap-in.</summary>
    Read,
    /// <summary>pwrite: host swap-out.</summary>
    Write,
    /// <summary>The userfaultfd: its creation and its ioctls.</summary>
    Uffd,
    /// <summary>process_vm_readv: the kernel read that tells a poisoned mapping.</summary>
    Peek,
}

/// <summary>Per kind: calls made, failures injected, reads or writes shortened.</summary>
public readonly record struct OsCallCounts(ulong Calls, ulong Failed, ulong Shortened);

/// <summary>The engine's OS-call failure injector: process-wide, so one user at a time (the test suite runs one
/// test at a time). Counting runs from the first set-up call until <see cref="Off"/>.</summary>
public static unsafe class OsFailureInjector
{
    public static readonly OsCall[] Kinds = Enum.GetValues<OsCall>();

    static OsFailureInjector()
    {
        if (Kinds.Length != Lib.OsKinds) throw new InvalidOperationException($"OsCall has {Kinds.Length} kinds, the engine {Lib.OsKinds}");
    }

    /// <summary>The <paramref name="nth"/> call of <paramref name="kind"/> from now (1: the next) fails with
    /// <paramref name="errno"/> (a Win32 error code on Windows), once.</summary>
    public static void FailNth(OsCall kind, ulong nth, int errno)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(nth, 1UL);
        ArgumentOutOfRangeException.ThrowIfLessThan(errno, 1);
        FaultEngine.EnsureInstalled();
        FaultEngine.Check(Lib.OsFailSet((int)kind, nth, errno), "pl_osfail_set");
    }

    /// <summary>Calls of the given kinds fail with probability <paramref name="perMillion"/> / 10^6 each, with the
    /// kind's usual error (out of memory, disk full, ...), the draws following <paramref name="seed"/>.</summary>
    public static void FailAtRandom(ulong seed, uint perMillion, IEnumerable<OsCall> kinds)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(perMillion, 1_000_000u);
        uint mask = 0;
        foreach (OsCall k in kinds) mask |= 1u << (int)k;
        FaultEngine.EnsureInstalled();
        FaultEngine.Check(Lib.OsFailRandom(seed, perMillion, mask), "pl_osfail_random");
    }

    /// <summary>Reads and writes move fewer bytes than asked with probability <paramref name="perMillion"/> / 10^6.</summary>
    public static void ShortTransfers(uint perMillion)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(perMillion, 1_000_000u);
        FaultEngine.EnsureInstalled();
        FaultEngine.Check(Lib.OsFailShort(perMillion), "pl_osfail_short");
    }

    public static IReadOnlyDictionary<OsCall, OsCallCounts> Counts
    {
        get
        {
            ulong* calls = stackalloc ulong[Lib.OsKinds], failed = stackalloc ulong[Lib.OsKinds], shortened = stackalloc ulong[Lib.OsKinds];
            _ = Lib.OsFailCounts(calls, failed, shortened, Lib.OsKinds);
            return Kinds.ToDictionary(k => k, k => new OsCallCounts(calls[(int)k], failed[(int)k], shortened[(int)k]));
        }
    }

    /// <summary>Everything off, every count zero.</summary>
    public static void Off() => Lib.OsFailOff();

    /// <summary>Turns the injector off when disposed (so a failing assertion does not leave it on).</summary>
    public static IDisposable Scope()
    {
        Off();
        return new OffOnDispose();
    }

    private sealed class OffOnDispose : IDisposable
    {
        public void Dispose() => Off();
    }
}

/// <summary>The engine's own consistency checks of its tables, recomputed from scratch (c/check.c).</summary>
public static unsafe class EngineTables
{
    private const int Cap = 512;

    /// <summary>The arena's free bitmap, per-state counts, owners and sharer totals against its frame table:
    /// null if consistent, else the first problem and how many there are.</summary>
    public static string? CheckArena(HostArena arena)
    {
        using ArenaUse use = arena.Use(); // the arena's use count: a Dispose meanwhile waits for the check
        byte* why = stackalloc byte[Cap];
        int n = Lib.CheckArena(use.Engine, why, Cap);
        FaultEngine.Check(n, "pl_check_arena");
        return n == 0 ? null : $"{Text(why)} ({n} problem{(n == 1 ? "" : "s")})";
    }

    /// <summary>The VM's mapping count, frames, pool, shared pages and parity groups against its page tables.</summary>
    public static string? CheckRegion(GuestVm vm)
    {
        using RegionUse use = vm.Use();
        byte* why = stackalloc byte[Cap];
        int n = Lib.CheckRegion(use.Id, why, Cap);
        FaultEngine.Check(n, "pl_check_region");
        return n == 0 ? null : $"{vm.Name}: {Text(why)} ({n} problem{(n == 1 ? "" : "s")})";
    }

    private static string Text(byte* s)
    {
        var span = new ReadOnlySpan<byte>(s, Cap);
        int end = span.IndexOf((byte)0);
        return Encoding.UTF8.GetString(span[..(end < 0 ? Cap : end)]);
    }
}
