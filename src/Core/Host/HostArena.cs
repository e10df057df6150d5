// Host physical memory: an arena of frames (a sealed memfd on Linux, a section on Windows) and its host
// view. The state and owner of every frame live in the fault engine's frame table (the one truth, which
// the fault handler also uses); this class reads that table and changes it only through engine calls.
// Every call holds a use of the arena (ArenaUse), so a concurrent Dispose waits for it or makes it throw
// ObjectDisposedException: never a crash.
using PageLab.Core.Faults;
using PageLab.Native;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Host;

public sealed unsafe class HostArena : IDisposable
{
    private readonly IOsArena _os;
    private readonly IHostOs _host;
    private readonly ArenaHandle _handle; // the engine's struct pl_arena *; owns _os from creation on
    private readonly byte* _state;     // frame -> FrameState (engine memory, read-only here): valid while an ArenaUse is held
    private readonly int* _owner;      // frame -> VM id while Guest
    private readonly uint* _sharers;   // frame -> guest pages mapping it while Shared
    private int _disposed;             // set by Dispose: new uses are refused (the handle closes once in-flight ones end)

    private HostArena(IHostOs host, IOsArena os, uint frames)
    {
        _host = host;
        _os = os;
        FrameCount = frames;
        PageSize = host.PageSize;
        FaultEngine.Check(Lib.ArenaCreate(os.Handle, os.HostView, frames, out nint engine), $"an arena of {frames} frames");
        _handle = new ArenaHandle(engine, os);
        try
        {
            using ArenaUse use = Use();
            FaultEngine.Check(Lib.ArenaTables(use.Engine, out _state, out _owner), "pl_arena_tables");
            FaultEngine.Check(Lib.ShareTables(use.Engine, out _sharers), "pl_share_tables");
        }
        catch
        {
            _handle.Dispose();
            throw;
        }
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
    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>A reference on the arena's handle (DangerousAddRef) for a VM's region, which releases it
    /// once destroyed. Refused once the arena is disposed.</summary>
    internal ArenaHandle TakeReference()
    {
        using ArenaUse use = Use(); // refuses a disposed arena; the reference below outlives it
        bool added = false;
        _handle.DangerousAddRef(ref added);
        return _handle;
    }

    internal ArenaUse Use()
    {
        // A SafeHandle accepts new references after Dispose while others are outstanding: the flag refuses them.
        if (Volatile.Read(ref _disposed) != 0) throw Disposed();
        try { return new ArenaUse(_handle); }
        catch (ObjectDisposedException) { throw Disposed(); }
    }

    private static ObjectDisposedException Disposed() => new(nameof(HostArena), "the arena has been disposed");

    public FrameCounts Counts
    {
        get
        {
            long* c = stackalloc long[6];
            using (ArenaUse use = Use()) FaultEngine.Check(Lib.ArenaCounts(use.Engine, c), "pl_arena_counts");
            return new(c[0], c[1], c[2], c[3], c[4], c[5]);
        }
    }

    /// <summary>Shared frames and the guest pages mapping them (their difference is the frames sharing saves).</summary>
    public SharingCounts Sharing
    {
        get
        {
            long* c = stackalloc long[2];
            using (ArenaUse use = Use()) FaultEngine.Check(Lib.ShareCounts(use.Engine, c), "pl_share_counts");
            return new(c[0], c[1]);
        }
    }

    /// <summary>Guest pages mapping a Shared frame (0 for any other state).</summary>
    public uint SharersOf(HostFrame frame)
    {
        CheckFrame(frame);
        using ArenaUse use = Use();
        // SAFETY: in range; the tables live while `use` is held and only the engine writes them.
        if ((FrameState)Volatile.Read(ref _state[frame.Value]) != FrameState.Shared) return 0;
        return Volatile.Read(ref _sharers[frame.Value]) & ~Lib.ShareDying;
    }

    /// <summary>An uncorrected error in a Shared frame: no page may join it any more, every sharer (in any
    /// VM) is unbacked, flagged lost unless the frame was created from a zero page (a hole reads zero, so
    /// nothing is lost), and the frame is retired once the last sharer left. Null if the frame is not
    /// Shared (any more). The VMs' recovery engines hear of lost pages through their handler events.</summary>
    public (int Pages, bool Lost)? ReportShared(HostFrame frame)
    {
        CheckFrame(frame);
        int rc;
        int zero;
        using (ArenaUse use = Use()) rc = Lib.ShareReport(use.Engine, frame.Value, out zero);
        if (rc == Lib.ESTATE) return null;
        FaultEngine.Check(rc, $"reporting an error in shared {frame}");
        return (rc, zero == 0);
    }

    /// <summary>The bytes of a frame through the host view.</summary>
    /// <remarks>The span aliases the frame wherever a guest maps it; valid until the arena is disposed
    /// (and its last VM with it): keep the arena alive while the span is used.</remarks>
    public Span<byte> FrameBytes(HostFrame frame)
    {
        CheckFrame(frame);
        if (IsDisposed) throw Disposed();
        // SAFETY: frame < FrameCount, so the page lies inside the host view, which lives as long as the arena.
        return new Span<byte>((byte*)_os.HostView + (long)frame.Value * PageSize, PageSize);
    }

    public FrameState StateOf(HostFrame frame)
    {
        CheckFrame(frame);
        using ArenaUse use = Use();
        // SAFETY: in range; the table lives while `use` is held and only the engine writes it.
        return (FrameState)Volatile.Read(ref _state[frame.Value]);
    }

    /// <summary>The VM id owning a Guest frame, or null.</summary>
    public int? OwnerOf(HostFrame frame)
    {
        CheckFrame(frame);
        using ArenaUse use = Use();
        // SAFETY: as in StateOf. The owner is stored before the state, so a Guest state shows its owner.
        if ((FrameState)Volatile.Read(ref _state[frame.Value]) != FrameState.Guest) return null;
        int owner = Volatile.Read(ref _owner[frame.Value]);
        return owner == 0 ? null : owner;
    }

    /// <summary>Frames a VM holds (mapped at its pages or waiting in its demand pool).</summary>
    public long OwnedBy(int vmId)
    {
        using ArenaUse use = Use();
        return Lib.ArenaOwned(use.Engine, vmId);
    }

    /// <summary>Allocates zero frames in state Held, preferring one contiguous run.</summary>
    public HostFrame[] Allocate(uint count)
    {
        if (count == 0) throw new ArgumentOutOfRangeException(nameof(count), count, "allocate at least one frame");
        var frames = new HostFrame[count];
        int rc;
        using (ArenaUse use = Use())
        fixed (HostFrame* f = frames) rc = Lib.FramesAlloc(use.Engine, count, (uint*)f);
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
        using (ArenaUse use = Use())
        fixed (HostFrame* f = frames) rc = Lib.FramesRelease(use.Engine, (uint*)f, (uint)frames.Length);
        FaultEngine.Check(rc, $"releasing {frames.Length} frames");
    }

    /// <summary>Releases Held frames for paths that must end with the frames gone (an undo, a release after the
    /// work is done): a frame the OS refuses to punch is zeroed through the host view instead, so it is freed
    /// either way and never handed out with a VM's bytes. Retiring it would shrink the arena for good on every
    /// passing failure.</summary>
    public void ReleaseOrZero(ReadOnlySpan<HostFrame> frames)
    {
        if (frames.IsEmpty) return;
        RequireHeld(frames);
        int rc;
        using (ArenaUse use = Use())
        fixed (HostFrame* f = frames) rc = Lib.FramesReleaseOrZero(use.Engine, (uint*)f, (uint)frames.Length);
        FaultEngine.Check(rc, $"releasing {frames.Length} frames");
    }

    /// <summary>Zeroes Held frames through the host view without freeing them. Zeroing in place (rather
    /// than punching) keeps the pages resident, so the VM that gets them next does not fault them in again.</summary>
    public void ZeroInPlace(ReadOnlySpan<HostFrame> frames)
    {
        RequireHeld(frames);
        using ArenaUse use = Use();
        foreach (FrameRun run in PageRuns.Coalesce(frames))
            // SAFETY: the run lies inside the host view (checked by RequireHeld), which lives while `use` is held.
            new Span<byte>((byte*)_os.HostView + (long)run.Start.Value * PageSize, checked((int)((long)run.Length * PageSize))).Clear();
    }

    /// <summary>Takes a Free or Held frame out of service for good.</summary>
    public void Retire(HostFrame frame)
    {
        CheckFrame(frame);
        int rc;
        using (ArenaUse use = Use()) rc = Lib.FramesRetire(use.Engine, frame.Value);
        if (rc == Lib.ESTATE) throw new FrameStateException(frame, StateOf(frame), "Free or Held");
        FaultEngine.Check(rc, $"retiring {frame}");
    }

    /// <summary>Retires a frame only if it is Free at that instant (an error reported in a frame nobody
    /// holds). False if someone took it meanwhile: the report must follow it to where it is now.</summary>
    public bool TryRetireFree(HostFrame frame)
    {
        CheckFrame(frame);
        int rc;
        using (ArenaUse use = Use()) rc = Lib.FramesRetireFree(use.Engine, frame.Value);
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
        using (ArenaUse use = Use())
        fixed (HostFrame* f = frames) rc = Lib.FramesMove(use.Engine, (uint*)f, (uint)frames.Length, (uint)from, (uint)to);
        if (rc == Lib.ESTATE)
            foreach (HostFrame f in frames)
                if (StateOf(f) != from) throw new FrameStateException(f, StateOf(f), $"{from}");
        FaultEngine.Check(rc, $"moving {frames.Length} frames from {from} to {to}");
    }

    /// <summary>Closes the arena: every later call on it throws ObjectDisposedException (GuestVm.Create
    /// included). The engine's tables, the host view and the memfd go back to the OS once the last call
    /// and the last VM using the arena are done (a live VM keeps working until it is disposed). Safe to
    /// call from any thread, any number of times.</summary>
    public void Dispose()
    {
        Volatile.Write(ref _disposed, 1);
        _handle.Dispose();
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
