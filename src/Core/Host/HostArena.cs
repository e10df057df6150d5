// Host physical memory: an arena of frames (a sealed memfd on Linux), its host view, and the
// state and owner of every frame. Releasing a frame gives its memory back to the OS.
using PageLab.Native;

namespace PageLab.Core.Host;

public sealed unsafe class HostArena : IDisposable
{
    private readonly IOsArena _os;
    private readonly IHostOs _host;
    private readonly FrameAllocator _allocator;
    private readonly FrameState[] _state;
    private readonly int[] _owner; // VM id for Guest frames, 0 otherwise
    private readonly long[] _counts = new long[Enum.GetValues<FrameState>().Length];
    private readonly Dictionary<int, long> _ownedBy = new(); // Guest frames per VM id
    private readonly Lock _gate = new();
    private int _liveVms;

    private HostArena(IHostOs host, IOsArena os, uint frames)
    {
        _host = host;
        _os = os;
        FrameCount = frames;
        PageSize = host.PageSize;
        _allocator = new FrameAllocator(frames);
        _state = new FrameState[frames];
        _owner = new int[frames];
        _counts[(int)FrameState.Free] = frames;
    }

    /// <summary>Creates an arena of <paramref name="frames"/> zero frames.</summary>
    public static HostArena Create(uint frames, string name = "pagelab-arena", IHostOs? host = null)
    {
        if (frames == 0 || frames >= uint.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(frames), frames, "an arena needs between 1 and 4294967294 frames");
        host ??= IHostOs.Current;
        return new HostArena(host, host.CreateArena((long)frames * host.PageSize, name), frames);
    }

    public uint FrameCount { get; }
    public int PageSize { get; }
    internal nint OsHandle => _os.Handle;
    internal nint HostView => _os.HostView;

    public FrameCounts Counts
    {
        get
        {
            lock (_gate)
                return new(_counts[0], _counts[1], _counts[2], _counts[3], _counts[4]);
        }
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
        lock (_gate) return _state[frame.Value];
    }

    /// <summary>The VM id owning a Guest frame, or null.</summary>
    public int? OwnerOf(HostFrame frame)
    {
        CheckFrame(frame);
        lock (_gate) return _state[frame.Value] == FrameState.Guest ? _owner[frame.Value] : null;
    }

    /// <summary>Frames a VM holds (mapped at its pages or waiting in its demand pool).</summary>
    public long OwnedBy(int vmId)
    {
        lock (_gate) return _ownedBy.GetValueOrDefault(vmId);
    }

    /// <summary>Allocates zero frames in state Held, preferring one contiguous run.</summary>
    public HostFrame[] Allocate(uint count)
    {
        var runs = new List<FrameRun>();
        lock (_gate)
        {
            if (count == 0) throw new ArgumentOutOfRangeException(nameof(count), count, "allocate at least one frame");
            if (!_allocator.TryAllocate(count, runs))
                throw new ArenaExhaustedException(count, _allocator.FreeCount, FrameCount);
            var frames = new HostFrame[count];
            int i = 0;
            foreach (FrameRun run in runs)
                foreach (HostFrame f in run.Frames())
                {
                    SetState(f, FrameState.Held, 0);
                    frames[i++] = f;
                }
            return frames;
        }
    }

    /// <summary>Returns Held frames to the allocator and their memory to the OS (they read as zero after).</summary>
    public void Release(ReadOnlySpan<HostFrame> frames)
    {
        lock (_gate)
        {
            Require(frames, FrameState.Held, owner: null);
            foreach (FrameRun run in PageRuns.Coalesce(frames))
            {
                _os.Discard((long)run.Start.Value * PageSize, (long)run.Length * PageSize);
                _allocator.Free(run);
                foreach (HostFrame f in run.Frames()) SetState(f, FrameState.Free, 0);
            }
        }
    }

    /// <summary>Zeroes Held frames through the host view without freeing them. Zeroing in place (rather
    /// than punching) keeps the pages resident, so the VM that gets them next does not fault them in again.</summary>
    public void Scrub(ReadOnlySpan<HostFrame> frames)
    {
        lock (_gate)
        {
            Require(frames, FrameState.Held, owner: null);
            foreach (FrameRun run in PageRuns.Coalesce(frames))
                // SAFETY: the run lies inside the host view (checked by Require), which lives as long as the arena.
                new Span<byte>((byte*)_os.HostView + (long)run.Start.Value * PageSize, checked((int)((long)run.Length * PageSize))).Clear();
        }
    }

    /// <summary>Takes a Free or Held frame out of service for good.</summary>
    public void Retire(HostFrame frame)
    {
        CheckFrame(frame);
        lock (_gate)
        {
            FrameState s = _state[frame.Value];
            if (s == FrameState.Free) _allocator.TryTake(frame);
            else if (s != FrameState.Held) throw new FrameStateException(frame, s, "Free or Held");
            SetState(frame, FrameState.Retired, 0);
            // Its content is garbage and it is never used again: give the memory back.
            _os.Discard((long)frame.Value * PageSize, PageSize);
        }
    }

    /// <summary>Process resident set size (host memory actually in use, arena pages included).</summary>
    public long ResidentBytes() => _host.ResidentBytes();

    /// <summary>Moves frames between states after checking all of them first (all or nothing).</summary>
    internal void Transition(ReadOnlySpan<HostFrame> frames, FrameState from, int? fromOwner, FrameState to, int toOwner)
    {
        lock (_gate)
        {
            Require(frames, from, fromOwner);
            if (from == FrameState.Guest && fromOwner is null)
            {
                foreach (HostFrame f in frames) SetState(f, to, toOwner);
                return;
            }
            // Every frame leaves the same (state, owner) for the same (state, owner): count once, not
            // per frame (a balloon transfer moves thousands of frames per call).
            int n = frames.Length;
            if (n == 0) return;
            if (from == FrameState.Guest) _ownedBy[fromOwner!.Value] -= n;
            if (to == FrameState.Guest) _ownedBy[toOwner] = _ownedBy.GetValueOrDefault(toOwner) + n;
            _counts[(int)from] -= n;
            _counts[(int)to] += n;
            foreach (HostFrame f in frames)
            {
                _state[f.Value] = to;
                _owner[f.Value] = toOwner;
            }
        }
    }

    internal void VmCreated() => Interlocked.Increment(ref _liveVms);
    internal void VmDisposed() => Interlocked.Decrement(ref _liveVms);

    public void Dispose()
    {
        if (Volatile.Read(ref _liveVms) != 0)
            throw new InvalidOperationException($"arena still has {_liveVms} live VMs; dispose them first (their guest views map the arena)");
        _os.Dispose();
    }

    private void Require(ReadOnlySpan<HostFrame> frames, FrameState state, int? owner)
    {
        foreach (HostFrame f in frames)
        {
            CheckFrame(f);
            if (_state[f.Value] != state || (owner is int o && _owner[f.Value] != o))
                throw new FrameStateException(f, _state[f.Value], owner is null ? $"{state}" : $"{state} of VM {owner}");
        }
    }

    private void SetState(HostFrame f, FrameState s, int owner)
    {
        if (_state[f.Value] == FrameState.Guest) _ownedBy[_owner[f.Value]]--;
        if (s == FrameState.Guest) _ownedBy[owner] = _ownedBy.GetValueOrDefault(owner) + 1;
        _counts[(int)_state[f.Value]]--;
        _counts[(int)s]++;
        _state[f.Value] = s;
        _owner[f.Value] = owner;
    }

    private void CheckFrame(HostFrame frame)
    {
        if (frame.Value >= FrameCount)
            throw new ArgumentOutOfRangeException(nameof(frame), frame, $"the arena has frames 0..{FrameCount - 1}");
    }
}
