// The host-level entry point for memory errors: a machine check reports a host frame, not a VM. The
// router looks the frame up in the engine's frame table and hands the report to the recovery engine of
// the VM that owns it (or whose parity it holds); a free frame is retired, a retired one was handled.
using PageLab.Core.Host;

namespace PageLab.Core.Recovery;

public sealed class ErrorRouter(HostArena arena)
{
    private readonly Dictionary<int, RecoveryEngine> _byVm = new();
    private readonly Lock _gate = new();

    public void Add(RecoveryEngine engine)
    {
        if (engine.Arena != arena) throw new ArgumentException($"VM {engine.Vm.Name} lives in another arena", nameof(engine));
        lock (_gate) _byVm[engine.Vm.Id] = engine;
    }

    public void Remove(RecoveryEngine engine)
    {
        lock (_gate) _byVm.Remove(engine.Vm.Id);
    }

    /// <summary>Handles an uncorrected error in <paramref name="frame"/>, wherever it is.</summary>
    public ErrorReport Report(HostFrame frame)
    {
        RecoveryEngine[] engines;
        lock (_gate) engines = _byVm.Values.ToArray();
        switch (arena.StateOf(frame))
        {
            case FrameState.Guest when arena.OwnerOf(frame) is int vm && engines.FirstOrDefault(e => e.Vm.Id == vm) is { } owner:
                return owner.Report(frame);
            case FrameState.Parity when engines.FirstOrDefault(e => e.ParityFrames.ContainsKey(frame.Value)) is { } owner:
                return owner.Report(frame);
            case FrameState.Shared when engines.Length > 0:
            {
                // Any engine contains every sharer (of every VM); the others hear on their next call.
                ErrorReport r = engines[0].Report(frame);
                foreach (RecoveryEngine e in engines.Skip(1)) e.CollectHandlerEvents();
                return r;
            }
            case FrameState.Free or FrameState.Retired:
            {
                var clock = System.Diagnostics.Stopwatch.StartNew();
                if (arena.StateOf(frame) == FrameState.Retired) return new ErrorReport(frame, ErrorOutcome.Recovered, null, clock.Elapsed);
                if (arena.TryRetireFree(frame)) return new ErrorReport(frame, ErrorOutcome.FreeFrameRetired, null, clock.Elapsed);
                return Report(frame); // taken meanwhile: handle it where it is now
            }
            default:
                throw new InvalidOperationException(
                    $"{frame} is {arena.StateOf(frame)}{(arena.OwnerOf(frame) is int o ? $" of VM {o}" : "")}, which no registered recovery engine handles");
        }
    }
}
