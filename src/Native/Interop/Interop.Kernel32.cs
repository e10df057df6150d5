// Hand-written kernel32 declarations for the Windows host backend (the section arena, its host view,
// returning pages, working-set size). The placeholder calls (VirtualAlloc2, MapViewOfFile3,
// UnmapViewOfFile2) are made by the C fault engine, which resolves them from kernelbase.dll.
using System.Runtime.InteropServices;

namespace PageLab.Native;

internal static unsafe partial class Interop
{
    internal static partial class Kernel32
    {
        private const string Lib = "kernel32.dll";

        public static readonly nint InvalidHandleValue = -1;

        public const uint PAGE_READWRITE = 0x04;
        public const uint SEC_COMMIT = 0x0800_0000;
        public const uint FILE_MAP_WRITE = 0x0002;
        public const uint FILE_MAP_READ = 0x0004;
        public const uint MEM_RESET = 0x0008_0000;

        [StructLayout(LayoutKind.Sequential)]
        public struct ProcessMemoryCounters
        {
            public uint Cb;
            public uint PageFaultCount;
            public nuint PeakWorkingSetSize;
            public nuint WorkingSetSize;
            public nuint QuotaPeakPagedPoolUsage;
            public nuint QuotaPagedPoolUsage;
            public nuint QuotaPeakNonPagedPoolUsage;
            public nuint QuotaNonPagedPoolUsage;
            public nuint PagefileUsage;
            public nuint PeakPagefileUsage;
        }

        [LibraryImport(Lib, EntryPoint = "CreateFileMappingW", SetLastError = true, StringMarshalling = StringMarshalling.Utf16)]
        public static partial nint CreateFileMapping(nint file, nint attributes, uint protect, uint maximumSizeHigh, uint maximumSizeLow, string? name);

        [LibraryImport(Lib, EntryPoint = "MapViewOfFile", SetLastError = true)]
        public static partial nint MapViewOfFile(nint mapping, uint desiredAccess, uint offsetHigh, uint offsetLow, nuint bytes);

        [LibraryImport(Lib, EntryPoint = "UnmapViewOfFile", SetLastError = true)]
        public static partial int UnmapViewOfFile(nint baseAddress);

        [LibraryImport(Lib, EntryPoint = "CloseHandle", SetLastError = true)]
        public static partial int CloseHandle(nint handle);

        [LibraryImport(Lib, EntryPoint = "VirtualAlloc", SetLastError = true)]
        public static partial nint VirtualAlloc(nint address, nuint size, uint allocationType, uint protect);

        [LibraryImport(Lib, EntryPoint = "VirtualUnlock", SetLastError = true)]
        public static partial int VirtualUnlock(nint address, nuint size);

        [LibraryImport(Lib, EntryPoint = "GetCurrentProcess")]
        public static partial nint GetCurrentProcess();

        [LibraryImport(Lib, EntryPoint = "K32GetProcessMemoryInfo", SetLastError = true)]
        public static partial int GetProcessMemoryInfo(nint process, ProcessMemoryCounters* counters, uint cb);
    }
}
