// Linux host backend: the arena is a sealed memfd, the host view a MAP_SHARED mapping of it,
// and returning frames is fallocate(PUNCH_HOLE) (MADV_DONTNEED does not free shared pages).
using Microsoft.Win32.SafeHandles;
using Mono.Unix.Native;

namespace PageLab.Native;

internal sealed class LinuxHostOs : IHostOs
{
    public int PageSize { get; } = Environment.SystemPageSize;

    public IOsArena CreateArena(long bytes, string name)
    {
        if (bytes <= 0 || bytes % PageSize != 0)
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, $"arena size must be a positive multiple of the page size {PageSize}");
        int raw = Interop.Libc.MemfdCreate(name, Interop.Libc.MFD_CLOEXEC | Interop.Libc.MFD_ALLOW_SEALING);
        if (raw < 0) throw ErrnoException.FromLastError("memfd_create");
        var memfd = new SafeFileHandle(raw, ownsHandle: true); // closed exactly once, never while a call uses it
        int fd = raw;
        try
        {
            if (Syscall.ftruncate(fd, bytes) != 0) throw LastMonoError($"ftruncate(memfd, {bytes})");
            // Sealed size: nothing can shrink the arena under a live mapping (that would SIGBUS guests).
            int seals = Interop.Libc.F_SEAL_GROW | Interop.Libc.F_SEAL_SHRINK | Interop.Libc.F_SEAL_SEAL;
            if (Interop.Libc.Fcntl(fd, Interop.Libc.F_ADD_SEALS, seals) != 0) throw ErrnoException.FromLastError("fcntl(F_ADD_SEALS)");
            nint view = Syscall.mmap(0, (ulong)bytes, MmapProts.PROT_READ | MmapProts.PROT_WRITE, MmapFlags.MAP_SHARED, fd, 0);
            if (view == Syscall.MAP_FAILED) throw LastMonoError($"mmap(host view, {bytes} bytes)");
            return new MemfdArena(memfd, bytes, view);
        }
        catch
        {
            memfd.Dispose(); // already failing; the original error is the one to report
            throw;
        }
    }

    public long ResidentBytes()
    {
        // statm's second field is resident pages, shared (memfd) pages included.
        string[] fields = File.ReadAllText("/proc/self/statm").Split(' ');
        return long.Parse(fields[1]) * PageSize;
    }

    public HostSystemInfo Describe()
    {
        string kernel = ReadTrimmed("/proc/sys/kernel/osrelease") ?? "unknown";
        long? maxMap = long.TryParse(ReadTrimmed("/proc/sys/vm/max_map_count"), out long m) ? m : null;
        long mappings = File.ReadLines("/proc/self/maps").LongCount();
        string uffd = File.Exists("/dev/userfaultfd")
            ? $"/dev/userfaultfd present; vm.unprivileged_userfaultfd={ReadTrimmed("/proc/sys/vm/unprivileged_userfaultfd") ?? "?"}"
            : $"no /dev/userfaultfd; vm.unprivileged_userfaultfd={ReadTrimmed("/proc/sys/vm/unprivileged_userfaultfd") ?? "absent"}";
        return new HostSystemInfo("Linux", kernel, PageSize, maxMap, mappings, uffd);
    }

    private static string? ReadTrimmed(string path)
    {
        try { return File.ReadAllText(path).Trim(); }
        catch (IOException) { return null; }
        catch (UnauthorizedAccessException) { return null; }
    }

    internal static ErrnoException LastMonoError(string operation) =>
        new(operation, NativeConvert.FromErrno(Stdlib.GetLastError()));

    private sealed class MemfdArena : IOsArena
    {
        private readonly SafeFileHandle memfd;
        private readonly long bytes;
        private readonly nint view;
        private int _disposed;

        public MemfdArena(SafeFileHandle memfd, long bytes, nint view)
        {
            (this.memfd, this.bytes, this.view) = (memfd, bytes, view);
            // Our own reference: the handle's finalizer alone never closes the fd (the engine and the guest
            // views use it until the arena that owns this object disposes it, in order).
            bool added = false;
            memfd.DangerousAddRef(ref added);
        }

        public nint Handle => memfd.DangerousGetHandle();
        public long Bytes => bytes;
        public nint HostView => view;

        public void Discard(long offset, long length)
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            bool added = false;
            memfd.DangerousAddRef(ref added); // a racing Dispose cannot close the fd under the call
            try
            {
                int mode = Interop.Libc.FALLOC_FL_PUNCH_HOLE | Interop.Libc.FALLOC_FL_KEEP_SIZE;
                if (Interop.Libc.Fallocate((int)memfd.DangerousGetHandle(), mode, offset, length) != 0)
                    throw ErrnoException.FromLastError($"fallocate(PUNCH_HOLE, offset {offset}, length {length})");
            }
            finally { memfd.DangerousRelease(); }
        }

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
            _ = Syscall.munmap(view, (ulong)bytes); // teardown: nothing useful to do on failure
            memfd.DangerousRelease();
            memfd.Dispose();
        }
    }
}
