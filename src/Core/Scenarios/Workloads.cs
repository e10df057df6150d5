// Guest workloads: C# code that reads and writes guest memory through the guest OS model, so every
// access ends in a real load and store on guest physical memory.
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
