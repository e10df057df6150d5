// Declarations of libpagelab's memory-error side (c/mce.c): the SIGBUS handler's counts and the
// kernel-backed injectors (UFFDIO_POISON, MADV_HWPOISON).
using System.Runtime.InteropServices;

namespace PageLab.Native;

internal static unsafe partial class Interop
{
    internal static partial class PageLab
    {
        /// <summary>Event kind: the kernel reported the page bad (BUS_MCEERR_AO); handle it as a report.</summary>
        public const uint EventReported = 16;
        public const int KernelUffdPoison = 1, KernelHwPoison = 2;

        /// <summary>The SIGBUS handler's counts, field by field in pl_memory_error_counts order (names from
        /// pl_memory_error_counts_layout; NativeLayoutTests compares the two).</summary>
        [StructLayout(LayoutKind.Sequential)]
        public struct KernelErrorCounts
        {
            public ulong ActionRequired;
            public ulong PoisonMarkers;
            public ulong ActionOptionalQueued;
            public ulong NothingToDo;
            public ulong Chained;
            public ulong ActionOptionalDeferred;

            /// <summary>How many counts the struct holds (each one 64-bit word).</summary>
            public static int Count => sizeof(KernelErrorCounts) / sizeof(ulong);
        }

        [LibraryImport(Lib, EntryPoint = "pl_memory_error_counts")] public static partial int KernelErrorCountsGet(ulong* counts, int n);
        [LibraryImport(Lib, EntryPoint = "pl_memory_error_counts_layout")] public static partial int KernelErrorCountsLayout(byte** names, int cap);
        [LibraryImport(Lib, EntryPoint = "pl_memory_errors_drain")] public static partial int KernelErrorsDrain(int id);
        [LibraryImport(Lib, EntryPoint = "pl_page_kernel_poisoned")] public static partial int PageKernelPoisoned(int id, ulong page);
        [LibraryImport(Lib, EntryPoint = "pl_previous_bus_flags")] public static partial long PreviousBusFlags();
        [LibraryImport(Lib, EntryPoint = "pl_kernel_injectors")]
        public static partial int KernelInjectors(byte* whyUffd, byte* whyHw, uint cap);
        [LibraryImport(Lib, EntryPoint = "pl_kernel_inject")]
        public static partial int KernelInject(int id, ulong page, uint offset, byte* mask, uint len, int requireTracked, int how, out uint hit);
    }
}
