// Windows host backend: the arena is a pagefile-backed section (CreateFileMapping of
// INVALID_HANDLE_VALUE, SEC_COMMIT), the host view a MapViewOfFile of all of it.
using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using static PageLab.Native.Interop.Kernel32;

namespace PageLab.Native;

internal sealed unsafe class WindowsHostOs : IHostOs
{
    public int PageSize { get; } = Environment.SystemPageSize;

    public IOsArena CreateArena(long bytes, string name)
    {
        if (bytes <= 0 || bytes % PageSize != 0)
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, $"arena size must be a positive multiple of the page size {PageSize}");
        // Unnamed: `name` only labels the arena in messages (a named section would be shared system-wide).
        // A section's size is fixed at creation, so nothing can shrink it under a live view.
        nint section = CreateFileMapping(InvalidHandleValue, 0, PAGE_READWRITE | SEC_COMMIT, (uint)(bytes >> 32), (uint)bytes, null);
        if (section == 0) throw ErrnoException.FromLastError($"CreateFileMapping(pagefile section '{name}', {bytes} bytes)");
        nint view = MapViewOfFile(section, FILE_MAP_READ | FILE_MAP_WRITE, 0, 0, (nuint)bytes);
        if (view == 0)
        {
            var error = ErrnoException.FromLastError($"MapViewOfFile(host view of '{name}', {bytes} bytes)");
            _ = CloseHandle(section); // already failing; the original error is the one to report
            throw error;
        }
        // SafeFileHandle's release is CloseHandle, which is what a section handle needs.
        return new SectionArena(new SafeFileHandle(section, ownsHandle: true), bytes, view, PageSize);
    }

    public long ResidentBytes()
    {
        ProcessMemoryCounters counters = default;
        counters.Cb = (uint)sizeof(ProcessMemoryCounters);
        if (GetProcessMemoryInfo(GetCurrentProcess(), &counters, counters.Cb) == 0)
            throw ErrnoException.FromLastError("GetProcessMemoryInfo");
        return (long)counters.WorkingSetSize;
    }

    public HostSystemInfo Describe()
    {
        string? wine = WineVersion();
        string os = wine is null ? "Windows" : $"Windows API on Wine {wine} (not Windows)";
        return new HostSystemInfo(os, RuntimeInformation.OSDescription, PageSize, MaxMapCount: null, CurrentMappings: 0,
            Userfaultfd: "not applicable (Windows: faults are resolved by a vectored exception handler)");
    }

    /// <summary>Wine's version when this process runs under Wine (ntdll exports wine_get_version), else null.</summary>
    internal static string? WineVersion()
    {
        if (!NativeLibrary.TryLoad("ntdll.dll", out nint ntdll)) return null;
        if (!NativeLibrary.TryGetExport(ntdll, "wine_get_version", out nint export)) return null;
        // SAFETY: wine_get_version takes nothing and returns a static NUL-terminated string.
        return Marshal.PtrToStringUTF8((nint)((delegate* unmanaged<byte*>)export)());
    }

    private sealed class SectionArena : IOsArena
    {
        private readonly SafeFileHandle section;
        private readonly long bytes;
        private readonly nint view;
        private readonly int pageSize;
        private int _disposed;

        public SectionArena(SafeFileHandle section, long bytes, nint view, int pageSize)
        {
            (this.section, this.bytes, this.view, this.pageSize) = (section, bytes, view, pageSize);
            // Our own reference: the handle's finalizer alone never closes the section under its views.
            bool added = false;
            section.DangerousAddRef(ref added);
        }

        public nint Handle => section.DangerousGetHandle();
        public long Bytes => bytes;
        public nint HostView => view;

        public void Discard(long offset, long length)
        {
            ObjectDisposedException.ThrowIf(_disposed != 0, this);
            if (offset < 0 || length <= 0 || offset % pageSize != 0 || length % pageSize != 0 || offset > bytes - length)
                throw new ArgumentOutOfRangeException(nameof(offset), offset, $"[{offset}, +{length}) is not a page-aligned range of the {bytes}-byte arena");
            // A section has no hole punching: zero what is not zero yet (discarded frames must read as
            // zero), then tell the OS it may drop the pages without writing them to the pagefile, and
            // take them out of the working set. Whatever the OS gives back afterwards is zero.
            for (long at = offset; at < offset + length; at += pageSize)
            {
                // SAFETY: [at, at + pageSize) lies inside the host view, which lives until Dispose.
                var page = new Span<byte>((byte*)view + at, pageSize);
                if (page.ContainsAnyExcept((byte)0)) page.Clear();
            }
            // Both are hints: MEM_RESET may be refused for a view, and VirtualUnlock of pages that were
            // never locked reports ERROR_NOT_LOCKED while it trims them. The zeros above are the contract.
            _ = VirtualAlloc(view + (nint)offset, (nuint)length, MEM_RESET, PAGE_READWRITE);
            _ = VirtualUnlock(view + (nint)offset, (nuint)length);
        }

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
            _ = UnmapViewOfFile(view); // teardown: nothing useful to do on failure
            section.DangerousRelease();
            section.Dispose();
        }
    }
}
