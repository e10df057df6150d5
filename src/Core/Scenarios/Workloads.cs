// Guest workloads: C# code that reads and writes guest memory through the guest OS model, so every
// access ends in a real load and store on guest physical memory.
using System.IO.Hashing;
using System.Runtime.InteropServices;
using PageLab.Core.GuestOs;

namespace PageLab.Core.Scenarios;

public interface IWorkload
{
    GuestProcess Process { get; }
    /// <summary>Pages the workload wants to use now (its true working set).</summary>
    ulong WorkingSetPages(int tick);
    void Step(int tick, Random rng);
}

/// <summary>Touches one byte in <paramref name="touches"/> random pages of its current working set.</summary>
public sealed class RandomTouchWorkload(GuestProcess process, Func<int, ulong> workingSet, int touches) : IWorkload
{
    public GuestProcess Process => process;
    public ulong WorkingSetPages(int tick) => Math.Min(workingSet(tick), process.VirtualPages);

    public void Step(int tick, Random rng)
    {
        ulong ws = WorkingSetPages(tick);
        if (ws == 0 || process.Killed) return;
        for (int i = 0; i < touches; i++)
        {
            ulong vpn = (ulong)rng.NextInt64((long)ws);
            int offset = rng.Next(process.Os.Vm.Arena.PageSize);
            try
            {
                Span<byte> page = process.Page(vpn);
                page[offset] = (byte)(page[offset] + 1);
            }
            catch (GuestProcessKilledException) { return; }
        }
    }
}

/// <summary>Touches its working set at random until <paramref name="freeAtTick"/>, then frees all but
/// <paramref name="keep"/> of its pages at once and touches only those: a guest that used a lot of memory
/// for a while and gave it back to its own free list (which only ballooning or free page reporting gets
/// back to the host).</summary>
public sealed class BurstWorkload(GuestProcess process, ulong pages, ulong keep, int freeAtTick, int touches) : IWorkload
{
    private readonly RandomTouchWorkload _touch = new(process, _ => pages, touches);
    private readonly RandomTouchWorkload _kept = new(process, _ => Math.Max(1, keep), touches);
    public GuestProcess Process => process;
    public ulong WorkingSetPages(int tick) => tick < freeAtTick ? pages : Math.Max(1, keep);

    public void Step(int tick, Random rng)
    {
        if (process.Killed) return;
        if (tick == freeAtTick)
            for (ulong v = Math.Max(1, keep); v < pages; v++) process.Release(v);
        (tick < freeAtTick ? _touch : _kept).Step(tick, rng);
    }
}

/// <summary>Allocates (writes) all its pages once, then touches only a small fraction: the idle VM
/// that allocated a lot.</summary>
public sealed class IdleWorkload(GuestProcess process, ulong pages, int touches) : IWorkload
{
    private bool _allocated;
    public GuestProcess Process => process;
    public ulong WorkingSetPages(int tick) => _allocated ? (ulong)touches : pages;

    public void Step(int tick, Random rng)
    {
        if (process.Killed) return;
        try
        {
            if (!_allocated)
            {
                for (ulong v = 0; v < pages; v++) process.Page(v)[0] = 1;
                _allocated = true;
                return;
            }
            for (int i = 0; i < touches; i++) process.Page((ulong)rng.NextInt64((long)pages))[1]++;
        }
        catch (GuestProcessKilledException) { }
    }
}

/// <summary>A guest image's pages (<see cref="ImageSpec"/>): written at boot with bytes that depend only on the
/// image's name and the page, so every VM booted from one image holds the same pages; then each tick reads
/// random pages (every read checked against the image) and rewrites a few with the bytes they hold (a
/// write to a shared page is a copy-on-write fault; the content stays the image's).</summary>
public sealed class ImageWorkload
{
    private readonly GuestProcess _process;
    private readonly ImageSpec _spec;
    private readonly ulong _seed;

    public ImageWorkload(GuestOperatingSystem os, ImageSpec spec)
    {
        _spec = spec;
        _seed = XxHash3.HashToUInt64(System.Text.Encoding.UTF8.GetBytes(spec.Name));
        _process = os.Spawn("image", spec.Pages);
        for (ulong v = 0; v < spec.Pages; v++)
        {
            Span<ulong> w = MemoryMarshal.Cast<byte, ulong>(_process.Page(v));
            for (int k = 0; k < w.Length; k++) w[k] = Word(v, k);
        }
    }

    public GuestProcess Process => _process;
    /// <summary>Reads that saw anything but the image's bytes (must stay 0: sharing, copy-on-write, guest
    /// and host paging all keep a page's content).</summary>
    public long WrongReads { get; private set; }
    public long Reads { get; private set; }
    public long Writes { get; private set; }

    // Distinct in every word of every page (never a uniform page), the same in every VM of the image.
    private ulong Word(ulong vpn, int k) => _seed ^ (vpn << 16 | (uint)k) * 0x9E3779B97F4A7C15UL;

    public void Step(Random rng)
    {
        if (_process.Killed) return;
        try
        {
            for (int i = 0; i < _spec.ReadsPerTick; i++)
            {
                ulong vpn = (ulong)rng.NextInt64((long)_spec.Pages);
                ReadOnlySpan<ulong> w = MemoryMarshal.Cast<byte, ulong>(_process.Page(vpn));
                int k = rng.Next(w.Length);
                Reads++;
                if (w[k] != Word(vpn, k) || w[0] != Word(vpn, 0)) WrongReads++;
            }
            for (int i = 0; i < _spec.WritesPerTick; i++)
            {
                ulong vpn = (ulong)rng.NextInt64((long)_spec.Pages);
                MemoryMarshal.Cast<byte, ulong>(_process.Page(vpn))[0] = Word(vpn, 0);
                Writes++;
            }
        }
        catch (GuestProcessKilledException) { }
    }
}
