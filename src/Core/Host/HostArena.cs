// Host physical memory: an arena of frames (a sealed memfd on Linux, a section on Windows) and its host
// view. The state and owner of every frame live in the fault engine's frame table (the one truth, which
// the fault handler also uses); this class reads that table and changes it only through engine calls.
using PageLab.Core.Faults;
using PageLab.Native;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Host;

public sealed unsafe class HostArena : IDisposable
{
    private readonly IOsArena _os;
    private readonly IHostOs _host;
    private readonly nint _engine;     // struct pl_arena *, freed by Dispose once no VM uses it
    private readonly byte* _state;     // frame -> FrameState (engine memory, read-only here)
    private readonly int* _owner;      // frame -> VM id while Guest
    private readonly uint* _sharers;   // frame -> guest pages mapping it while Shared
    private int _disposed;

    private HostArena(IHostOs host, IOsArena os, uint frames)
    {
        _host = host;
        _os = os;
        FrameCount = frames;
        PageSize = host.PageSize;
        FaultEngine.Check(Lib.ArenaCreate(os.Handle, os.HostView, frames, out _engine), $"an arena of {frames} frames");
        FaultEngine.Check(Lib.ArenaTables(_engine, out _state, out _owner), "pl_arena_tables");
        FaultEngine.Check(Lib.ShareTables(_engine, out _sharers), "pl_share_tables");
    }

    /// <summary>Creates an arena of <paramref name="frames"/> zero frames.</summary>
    public static HostArena Create(uint frames, string name = "pagelab-arena", IHostOs? host = null)
    {
        if (frames == 0 || frames >= uint.MaxValue - 1)
            throw new ArgumentOutOfRangeException(nameof(frames), frames, "an arena needs between 1 and 4294967293 frames");
        host ??= IHostOs.Current;
        IOsArena os = host.CreateArena((long)frames * host.PageSize, name);
        try { return new HostArena(host, os, frames); }
        catch
        {
            os.Dispose();
            throw;
        }
    }

    public uint FrameCount { get; }
    public int PageSize { get; }
    internal nint OsHandle => _os.Handle;
    internal nint HostView => _os.HostView;
    internal nint Engine
    {
        get
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
            return _engine;
        }
    }

    public FrameCounts Counts
    {
        get
        {
            long* c = stackalloc long[6];
            FaultEngine.Check(Lib.ArenaCounts(Engine, c), "pl_arena_counts");
            return new(c[0], c[1], c[2], c[3], c[4], c[5]);
        }
    }

    /// <summary>Shared frames and the guest pages mapping them (their difference is the frames sharing saves).</summary>
    public SharingCounts Sharing
    {
        get
        {
            long* c = stackalloc long[2];
            FaultEngine.Check(Lib.ShareCounts(Engine, c), "pl_share_counts");
            return new(c[0], c[1]);
        }
    }

    /// <summary>Guest pages mapping a Shared frame (0 for any other state).</summary>
    public uint SharersOf(HostFrame frame)
    {
        CheckFrame(frame);
        if (StateOf(frame) != FrameState.Shared) return 0;
        // SAFETY: in range; the table lives as long as the arena and only the engine writes it.
        return Volatile.Read(ref _sharers[frame.Value]) & ~Lib.ShareDying;
    }

    /// <summary>An uncorrected error in a Shared frame: no page may join it any more, every sharer (in any
    /// VM) is unbacked, flagged lost unless the frame was created from a zero page (a hole reads zero, so
    /// nothing is lost), and the frame is retired once the last sharer left. Null if the frame is not
    /// Shared (any more). The VMs' recovery engines hear of lost pages through their handler events.</summary>
    public (int Pages, bool Lost)? ReportShared(HostFrame frame)
    {
        CheckFrame(frame);
        int rc = Lib.ShareReport(Engine, frame.Value, out int zero);
        if (rc == Lib.ESTATE) return null;
        FaultEngine.Check(rc, $"reporting an error in shared {frame}");
        return (rc, zero == 0);
    }

    /// <summary>The bytes of a frame through the host view.</summary>
    /// <remarks>The span aliases the frame wherever a guest maps it; valid until the arena is disposed.</remarks>
    public Span<byte> FrameBytes(HostFrame frame)
    {
        CheckFrame(frame);
        // SAFETY: frame < FrameCount, so the page lies inside the host view, which lives as long as the arena.
        return new Span<byte>((byte*)_os.HostView + (long)frame.Value * PageSize, PageSize);
    }

    public FrameState StateOf(HostFrame frame)
    {
        CheckFrame(frame);
        // SAFETY: in range; the table lives as long as the arena and only the engine writes it.
        return (FrameState)Volatile.Read(ref _state[frame.Value]);
    }

    /// <summary>The VM id owning a Guest frame, or null.</summary>
    public int? OwnerOf(HostFrame frame)
    {
        CheckFrame(frame);
        // SAFETY: as in StateOf. The owner is stored before the state, so a Guest state shows its owner.
        if (StateOf(frame) != FrameState.Guest) return null;
        int owner = Volatile.Read(ref _owner[frame.Value]);
        return owner == 0 ? null : owner;
    }

    /// <summary>Frames a VM holds (mapped at its pages or waiting in its demand pool).</summary>
    public long OwnedBy(int vmId) => Lib.ArenaOwned(Engine, vmId);

    /// <summary>Allocates zero frames in state Held, preferring one contiguous run.</summary>
    public HostFrame[] Allocate(uint count)
    {
        if (count == 0) throw new ArgumentOutOfRangeException(nameof(count), count, "allocate at least one frame");
        var frames = new HostFrame[count];
        int rc;
        fixed (HostFrame* f = frames) rc = Lib.FramesAlloc(Engine, count, (uint*)f);
        if (rc == Lib.ENOFRAME || (rc == Lib.EINVAL && count > FrameCount))
            throw new ArenaExhaustedException(count, Counts.Free, FrameCount);
        FaultEngine.Check(rc, $"allocating {count} frames");
        return frames;
    }

    /// <summary>Returns Held frames to the arena and their memory to the OS (they read as zero after).
    /// All or nothing.</summary>
    public void Release(ReadOnlySpan<HostFrame> frames)
    {
        if (frames.IsEmpty) return;
        RequireHeld(frames);
        int rc;
        fixed (HostFrame* f = frames) rc = Lib.FramesRelease(Engine, (uint*)f, (uint)frames.Length);
        FaultEngine.Check(rc, $"releasing {frames.Length} frames");
    }

    /// <summary>Releases Held frames; if the OS refuses to punch them (they may still hold a VM's bytes), retires
    /// them instead, so a frame that could not be made zero is never handed out again nor left Held. For paths
    /// that must end with the frames gone (an undo, a release after the work is done).</summary>
    public void ReleaseOrRetire(ReadOnlySpan<HostFrame> frames)
    {
        try
        {
            Release(frames);
        }
        catch (ErrnoException)
        {
            foreach (HostFrame f in frames) Retire(f);
        }
    }

    /// <summary>Zeroes Held frames through the host view without freeing them. Zeroing in place (rather
    /// than punching) keeps the pages resident, so the VM that gets them next does not fault them in again.</summary>
    public void ZeroInPlace(ReadOnlySpan<HostFrame> frames)
    {
        RequireHeld(frames);
        foreach (FrameRun run in PageRuns.Coalesce(frames))
            // SAFETY: the run lies inside the host view (checked by RequireHeld), which lives as long as the arena.
            new Span<byte>((byte*)_os.HostView + (long)run.Start.Value * PageSize, checked((int)((long)run.Length * PageSize))).Clear();
    }

    /// <summary>Takes a Free or Held frame out of service for good.</summary>
    public void Retire(HostFrame frame)
    {
        CheckFrame(frame);
        int rc = Lib.FramesRetire(Engine, frame.Value);
        if (rc == Lib.ESTATE) throw new FrameStateException(frame, StateOf(frame), "Free or Held");
        FaultEngine.Check(rc, $"retiring {frame}");
    }

    /// <summary>Retires a frame only if it is Free at that instant (an error reported in a frame nobody
    /// holds). False if someone took it meanwhile: the report must follow it to where it is now.</summary>
    public bool TryRetireFree(HostFrame frame)
    {
        CheckFrame(frame);
        int rc = Lib.FramesRetireFree(Engine, frame.Value);
        if (rc == Lib.ESTATE) return false;
        FaultEngine.Check(rc, $"retiring {frame}");
        return true;
    }

    /// <summary>Process resident set size (host memory actually in use, arena pages included).</summary>
    public long ResidentBytes() => _host.ResidentBytes();

    /// <summary>Moves Held frames to Parity or back (every other move happens inside the engine's VM
    /// calls). All or nothing.</summary>
    internal void Transition(ReadOnlySpan<HostFrame> frames, FrameState from, FrameState to)
    {
        int rc;
        fixed (HostFrame* f = frames) rc = Lib.FramesMove(Engine, (uint*)f, (uint)frames.Length, (uint)from, (uint)to);
        if (rc == Lib.ESTATE)
            foreach (HostFrame f in frames)
                if (StateOf(f) != from) throw new FrameStateException(f, StateOf(f), $"{from}");
        FaultEngine.Check(rc, $"moving {frames.Length} frames from {from} to {to}");
    }

    public void Dispose()
    {
        if (Volatile.Read(ref _disposed) != 0) return;
        if (Lib.ArenaDestroy(_engine) == Lib.EBUSY)
            throw new InvalidOperationException("the arena still has live VMs; dispose them first (their guest views map the arena)");
        Volatile.Write(ref _disposed, 1);
        _os.Dispose();
    }

    private void RequireHeld(ReadOnlySpan<HostFrame> frames)
    {
        foreach (HostFrame f in frames)
        {
            CheckFrame(f);
            if (StateOf(f) != FrameState.Held) throw new FrameStateException(f, StateOf(f), "Held");
        }
    }

    private void CheckFrame(HostFrame frame)
    {
        if (frame.Value >= FrameCount)
            throw new ArgumentOutOfRangeException(nameof(frame), frame, $"the arena has frames 0..{FrameCount - 1}");
    }
}
