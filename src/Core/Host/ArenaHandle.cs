// The lifetime of an arena in the fault engine: a SafeHandle over its struct pl_arena *, so the engine's
// tables are freed exactly once, after the last call and the last VM using them (each VM holds a
// reference), and only then do the host view and the memfd (section) the guest views map go.
using System.Runtime.InteropServices;
using PageLab.Native;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Host;

internal sealed class ArenaHandle : SafeHandle
{
    private readonly IOsArena _os;

    public ArenaHandle(nint engine, IOsArena os) : base(0, ownsHandle: true)
    {
        _os = os;
        SetHandle(engine);
    }

    public override bool IsInvalid => handle == 0;

    protected override bool ReleaseHandle()
    {
        // Every VM's region released its reference after the engine destroyed it, so no region is left
        // and no call is inside: the engine frees its tables. Only then may the OS arena go.
        bool ok = Lib.ArenaDestroy(handle) == 0;
        if (ok) _os.Dispose();
        return ok;
    }
}

/// <summary>A use of an arena: its engine tables, host view and memfd stay until it is disposed.</summary>
internal readonly ref struct ArenaUse
{
    private readonly ArenaHandle _handle;

    public ArenaUse(ArenaHandle handle)
    {
        bool added = false;
        handle.DangerousAddRef(ref added); // throws ObjectDisposedException once the arena is disposed
        _handle = handle;
    }

    /// <summary>The engine's struct pl_arena *, valid while this use is held.</summary>
    public nint Engine => _handle.DangerousGetHandle();

    public void Dispose() => _handle.DangerousRelease();
}
