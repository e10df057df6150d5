// The baselines' own memory: a memfd and a reserved range, remapped with one direct libc mmap per call
// (Linux x86-64/arm64 constants), so a baseline pays what libpagelab's own mmap pays and nothing else.
using System.Runtime.InteropServices;
using PageLab.Native;

namespace PageLab.Bench;

internal sealed partial class RawMemfd : IDisposable
{
    private const int ProtNone = 0;
    private const int ProtRead = 1;
    private const int ProtWrite = 2;
    private const int MapShared = 0x01;
    private const int MapPrivate = 0x02;
    private const int MapFixed = 0x10;
    private const int MapAnonymous = 0x20;
    private const int MapNoReserve = 0x4000;
    private const nint MapFailed = -1;

    private readonly int _fd;
    private readonly long _frames;
    private readonly long _rangePages;
    private int _disposed;

    /// <summary>A memfd of <paramref name="frames"/> zero pages and a PROT_NONE range of
    /// <paramref name="rangePages"/> pages to map them into.</summary>
    public RawMemfd(long frames, long rangePages)
    {
        PageSize = Environment.SystemPageSize;
        _frames = frames;
        _rangePages = rangePages;
        _fd = Interop.Libc.MemfdCreate("pagelab-bench-raw", Interop.Libc.MFD_CLOEXEC);
        if (_fd < 0) throw ErrnoException.FromLastError("memfd_create");
        if (Ftruncate(_fd, frames * PageSize) != 0)
        {
            var e = ErrnoException.FromLastError($"ftruncate(memfd, {frames * PageSize})");
            _ = Close(_fd); // already failing; the ftruncate error is the one to report
            throw e;
        }
        Base = Mmap(0, (nuint)(rangePages * PageSize), ProtNone, MapPrivate | MapAnonymous | MapNoReserve, -1, 0);
        if (Base == MapFailed)
        {
            int errno = Marshal.GetLastSystemError();
            _ = Close(_fd); // already failing; the mmap error is the one to report
            throw new ErrnoException($"mmap(reserve {rangePages} pages)", errno);
        }
        HostView = Mmap(0, (nuint)(frames * PageSize), ProtRead | ProtWrite, MapShared, _fd, 0);
        if (HostView == MapFailed)
        {
            int errno = Marshal.GetLastSystemError();
            _ = Munmap(Base, (nuint)(rangePages * PageSize)); // already failing; the mmap error is the one to report
            _ = Close(_fd);
            throw new ErrnoException($"mmap(host view of {frames} frames)", errno);
        }
    }

    public int PageSize { get; }

    /// <summary>Start of the reserved range. Valid until <see cref="Dispose"/>.</summary>
    public nint Base { get; }

    /// <summary>All frames, mapped once (as PageLab's host view). Valid until <see cref="Dispose"/>.</summary>
    public nint HostView { get; }

    public int Fd => _fd;

    /// <summary>mmap(anonymous PROT_NONE, MAP_FIXED) over pages [page, page+count): unmapped again.</summary>
    public void Unmap(long page, long count)
    {
        nint got = Mmap(Base + (nint)(page * PageSize), (nuint)(count * PageSize), ProtNone,
            MapPrivate | MapAnonymous | MapNoReserve | MapFixed, -1, 0);
        if (got == MapFailed) throw new ErrnoException($"mmap(PROT_NONE, page {page}, {count} pages)", Marshal.GetLastSystemError());
    }

    /// <summary>mmap(MAP_SHARED|MAP_FIXED, RW) of frames [frame, frame+count) over pages [page, page+count).</summary>
    public void Map(long page, long count, long frame)
    {
        nint got = Mmap(Base + (nint)(page * PageSize), (nuint)(count * PageSize), ProtRead | ProtWrite,
            MapShared | MapFixed, _fd, frame * PageSize);
        // No SetLastError: the measured call carries no marshalling that libpagelab's mmap lacks, so errno
        // is read straight after the call instead (best effort, on the failure path only).
        if (got == MapFailed) throw new ErrnoException($"mmap(page {page}, {count} pages, frame {frame})", Marshal.GetLastSystemError());
    }

    /// <summary>fallocate(PUNCH_HOLE|KEEP_SIZE) of frames [frame, frame+count): they read as zero after.</summary>
    public void Punch(long frame, long count)
    {
        int mode = Interop.Libc.FALLOC_FL_PUNCH_HOLE | Interop.Libc.FALLOC_FL_KEEP_SIZE;
        if (Interop.Libc.Fallocate(_fd, mode, frame * PageSize, count * PageSize) != 0)
            throw ErrnoException.FromLastError($"fallocate(PUNCH_HOLE, frame {frame}, {count} frames)");
    }

    /// <summary>pwrite of frame <paramref name="frame"/> (through the host view) to <paramref name="file"/> at
    /// <paramref name="offset"/>, the whole page.</summary>
    public void WriteFrame(int file, long frame, long offset)
    {
        nint n = Pwrite(file, HostView + (nint)(frame * PageSize), (nuint)PageSize, offset);
        // No SetLastError, as for mmap; a short write of one page to a regular file is an error here too.
        if (n != PageSize) throw new ErrnoException($"pwrite(frame {frame}, offset {offset}) returned {n}", Marshal.GetLastSystemError());
    }

    /// <summary>pread of one page from <paramref name="file"/> at <paramref name="offset"/> into frame
    /// <paramref name="frame"/> through the host view.</summary>
    public void ReadFrame(int file, long frame, long offset)
    {
        nint n = Pread(file, HostView + (nint)(frame * PageSize), (nuint)PageSize, offset);
        if (n != PageSize) throw new ErrnoException($"pread(frame {frame}, offset {offset}) returned {n}", Marshal.GetLastSystemError());
    }

    /// <summary>mprotect of mapped pages of the range (prot: 0 = none, 3 = read/write).</summary>
    public void Protect(long page, long count, int prot)
    {
        if (Mprotect(Base + (nint)(page * PageSize), (nuint)(count * PageSize), prot) != 0)
            throw new InvalidOperationException($"mprotect(page {page}, {count} pages, prot {prot}) failed");
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _ = Munmap(Base, (nuint)(_rangePages * PageSize)); // teardown: nothing useful to do on failure
        _ = Munmap(HostView, (nuint)(_frames * PageSize));
        _ = Close(_fd);
    }

    [LibraryImport("libc.so.6", EntryPoint = "mmap")]
    private static partial nint Mmap(nint addr, nuint length, int prot, int flags, int fd, long offset);

    [LibraryImport("libc.so.6", EntryPoint = "pread")]
    private static partial nint Pread(int fd, nint buf, nuint count, long offset);

    [LibraryImport("libc.so.6", EntryPoint = "pwrite")]
    private static partial nint Pwrite(int fd, nint buf, nuint count, long offset);

    [LibraryImport("libc.so.6", EntryPoint = "mprotect")]
    private static partial int Mprotect(nint addr, nuint length, int prot);

    [LibraryImport("libc.so.6", EntryPoint = "munmap")]
    private static partial int Munmap(nint addr, nuint length);

    [LibraryImport("libc.so.6", EntryPoint = "ftruncate", SetLastError = true)]
    private static partial int Ftruncate(int fd, long length);

    [LibraryImport("libc.so.6", EntryPoint = "close")]
    private static partial int Close(int fd);
}
