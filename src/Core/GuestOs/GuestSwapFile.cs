// A guest OS's swap device: a real file of page-sized slots. Page-outs and page-ins are real file I/O.
using Microsoft.Win32.SafeHandles;

namespace PageLab.Core.GuestOs;

public sealed class GuestSwapFile : IDisposable
{
    private readonly SafeFileHandle _file;
    private readonly Stack<long> _freeSlots = new();
    private long _nextSlot;

    public GuestSwapFile(string path, int pageSize)
    {
        Path = path;
        PageSize = pageSize;
        // Never outlives the process, even a killed one: deleted at once on Linux (the handle keeps the
        // file), deleted by the OS when the last handle closes on Windows.
        if (OperatingSystem.IsWindows())
            _file = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite, FileShare.None, FileOptions.DeleteOnClose);
        else
        {
            _file = File.OpenHandle(path, FileMode.Create, FileAccess.ReadWrite, FileShare.None);
            File.Delete(path);
        }
    }

    public string Path { get; }
    public int PageSize { get; }
    public long SlotsInUse => _nextSlot - _freeSlots.Count;
    /// <summary>The file's size in bytes (it has no name on Linux once open, so ask the handle).</summary>
    public long Bytes => RandomAccess.GetLength(_file);
    public long Writes { get; private set; }
    public long Reads { get; private set; }

    /// <summary>Writes one page to a free slot and returns the slot.</summary>
    public long Write(ReadOnlySpan<byte> page)
    {
        long slot = _freeSlots.Count > 0 ? _freeSlots.Pop() : _nextSlot++;
        RandomAccess.Write(_file, page[..PageSize], slot * PageSize);
        Writes++;
        return slot;
    }

    /// <summary>Reads a slot back into <paramref name="page"/> and frees the slot.</summary>
    public void ReadAndFree(long slot, Span<byte> page)
    {
        int n = RandomAccess.Read(_file, page[..PageSize], slot * PageSize);
        if (n != PageSize) throw new IOException($"swap slot {slot} of {Path}: read {n} of {PageSize} bytes");
        Reads++;
        _freeSlots.Push(slot);
    }

    public void Free(long slot) => _freeSlots.Push(slot);

    public void Dispose() => _file.Dispose();
}
