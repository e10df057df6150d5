// The synthetic workload kinds (idle, active, growing, burst): random touches over a working set of a given
// shape. Every access ends in a real load and store on guest physical memory.
using PageLab.Core.GuestOs;
using PageLab.Lab.Scenarios;

namespace PageLab.Lab.Workloads;

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

/// <summary>The keys of the synthetic kinds (one record, so a key one of them lacks is refused with their
/// own message rather than as unknown).</summary>
public sealed record SyntheticSettings
{
    /// <summary>idle: pages allocated once; active and burst: working set; growing: working set at the start.</summary>
    public ulong Pages { get; init; }
    /// <summary>growing: working set at the end of the run; burst: what it keeps after it frees.</summary>
    public ulong? EndPages { get; init; }
    /// <summary>burst: the tick it frees all but endPages of its pages.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public int? FreeAtTick { get; init; }
    public int TouchesPerTick { get; init; } = 400;
}

/// <summary>The checks every synthetic kind makes, in the order the scenario made them before kinds had classes.</summary>
public abstract class SyntheticKind : WorkloadKind<SyntheticSettings>
{
    public override IReadOnlyList<(string Key, string Accepts)> Required => [("pages", "1 to the VM's pages - 1")];

    /// <summary>The kind has endPages (growing, burst) / freeAtTick (burst); the others refuse them.</summary>
    protected virtual bool HasEndPages => false;
    protected virtual bool HasFreeAtTick => false;

    protected override void Validate(SyntheticSettings w, WorkloadContext c)
    {
        ValidateShape(w, c);
        if (w.Pages == 0 || w.Pages >= c.VmPages) Fail("pages", $"must be between 1 and the VM's pages - 1, got {w.Pages}");
        ValidateEnd(w, c);
        if (w.TouchesPerTick is < 0 or > Scenario.MaxTouchesPerTick)
            Fail("touchesPerTick", $"must be between 0 and {Scenario.MaxTouchesPerTick}, got {w.TouchesPerTick}");
        if (w.EndPages is not null && !HasEndPages)
            Fail("endPages", $"only a growing or burst workload has endPages, not '{Name}'");
        if (w.FreeAtTick is not null && !HasFreeAtTick)
            Fail("freeAtTick", $"only a burst workload has freeAtTick, not '{Name}'");
    }

    /// <summary>Checks of one shape before the pages check, and after it (the order the scenario checked them in
    /// before kinds had classes, so the first error reported stays the same).</summary>
    protected virtual void ValidateShape(SyntheticSettings w, WorkloadContext c) { }
    protected virtual void ValidateEnd(SyntheticSettings w, WorkloadContext c) { }
}

public sealed class IdleKind : SyntheticKind
{
    public override string Name => "idle";
    protected override IWorkload Create(SyntheticSettings w, GuestProcess p, WorkloadContext c) => new IdleWorkload(p, w.Pages, w.TouchesPerTick);
}

public sealed class ActiveKind : SyntheticKind
{
    public override string Name => "active";
    protected override IWorkload Create(SyntheticSettings w, GuestProcess p, WorkloadContext c) =>
        new RandomTouchWorkload(p, _ => w.Pages, w.TouchesPerTick);
}

public sealed class GrowingKind : SyntheticKind
{
    public override string Name => "growing";
    protected override bool HasEndPages => true;

    protected override void ValidateEnd(SyntheticSettings w, WorkloadContext c)
    {
        if (w.EndPages is not ulong e || e == 0 || e >= c.VmPages)
            Fail("endPages", $"a growing workload needs endPages between 1 and {c.VmPages - 1}");
    }

    protected override IWorkload Create(SyntheticSettings w, GuestProcess p, WorkloadContext c) =>
        new RandomTouchWorkload(p, t => w.Pages + (ulong)((double)(w.EndPages!.Value - w.Pages) * Math.Min(1, (double)t / c.Ticks)), w.TouchesPerTick);
}

public sealed class BurstKind : SyntheticKind
{
    public override string Name => "burst";
    protected override bool HasEndPages => true;
    protected override bool HasFreeAtTick => true;

    protected override void ValidateShape(SyntheticSettings w, WorkloadContext c)
    {
        if (w.FreeAtTick is not int ft || ft < 1 || ft > c.Ticks) Fail("freeAtTick", $"a burst workload needs freeAtTick between 1 and ticks ({c.Ticks})");
        if (w.EndPages is not ulong keep || keep == 0 || keep >= w.Pages)
            Fail("endPages", $"a burst needs endPages, the pages it keeps: between 1 and {w.Pages - 1} (fewer than its pages), got {w.EndPages?.ToString() ?? "none"}");
    }

    protected override IWorkload Create(SyntheticSettings w, GuestProcess p, WorkloadContext c) =>
        new BurstWorkload(p, w.Pages, w.EndPages ?? 0, w.FreeAtTick!.Value, w.TouchesPerTick);
}
