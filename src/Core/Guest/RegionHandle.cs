// The lifetime of one VM's region in the fault engine: a SafeHandle, so a region is destroyed exactly
// once, only after the last call using it has returned, and even if its VM is never disposed. The
// files the engine reads and writes for it (host swap, disk copies) and its arena stay until then.
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Guest;

internal sealed class RegionHandle : SafeHandle
{
    private readonly List<SafeHandle> _files = new();
    private readonly SafeHandle _arena;

    /// <summary>Takes over a reference the caller holds on <paramref name="arena"/> (DangerousAddRef):
    /// released once the region is destroyed, so the arena outlives it.</summary>
    public RegionHandle(int id, SafeHandle arena) : base(0, ownsHandle: true)
    {
        _arena = arena;
        SetHandle(id);
    }

    /// <summary>The engine's region id (generation-tagged: a stale id is refused, never reused).</summary>
    public int Id => (int)handle;

    public override bool IsInvalid => handle == 0;

    /// <summary>Keeps a file open for as long as the engine may use it for this region.</summary>
    public void KeepOpen(SafeFileHandle file)
    {
        bool added = false;
        file.DangerousAddRef(ref added);
        lock (_files) _files.Add(file);
    }

    protected override bool ReleaseHandle()
    {
        // The engine waits for calls and handlers inside the region, quarantines its guest memory and
        // frees its frames (poisoned ones retired); only then may the files it used close and its arena go.
        bool ok = Lib.RegionDestroy((int)handle) == 0;
        lock (_files)
        {
            foreach (SafeHandle f in _files) f.DangerousRelease();
            _files.Clear();
        }
        _arena.DangerousRelease();
        return ok;
    }
}

/// <summary>A use of a region: the handle cannot be released until it is disposed.</summary>
internal readonly ref struct RegionUse
{
    private readonly RegionHandle _handle;

    public RegionUse(RegionHandle handle)
    {
        bool added = false;
        handle.DangerousAddRef(ref added); // throws ObjectDisposedException once the VM is disposed
        _handle = handle;
    }

    public int Id => _handle.Id;

    public void Dispose() => _handle.DangerousRelease();
}
