// Declarations of libpagelab's failure injector for its OS layer (c/osfail.c) and its table checks
// (c/check.c).
using System.Runtime.InteropServices;

namespace PageLab.Native;

internal static unsafe partial class Interop
{
    internal static partial class PageLab
    {
        /// <summary>Kinds of OS call (enum PL_OS_* in pagelab.h), in order.</summary>
        public const int OsKinds = 9;

        [LibraryImport(Lib, EntryPoint = "pl_osfail_set")] public static partial int OsFailSet(int kind, ulong nth, int error);
        [LibraryImport(Lib, EntryPoint = "pl_osfail_random")] public static partial int OsFailRandom(ulong seed, uint perMillion, uint kindsMask);
        [LibraryImport(Lib, EntryPoint = "pl_osfail_short")] public static partial int OsFailShort(uint perMillion);
        [LibraryImport(Lib, EntryPoint = "pl_osfail_counts")]
        public static partial int OsFailCounts(ulong* calls, ulong* failed, ulong* shortened, int n);
        [LibraryImport(Lib, EntryPoint = "pl_osfail_off")] public static partial void OsFailOff();

        [LibraryImport(Lib, EntryPoint = "pl_check_arena")] public static partial int CheckArena(nint arena, byte* why, uint cap);
        [LibraryImport(Lib, EntryPoint = "pl_check_region")] public static partial int CheckRegion(int id, byte* why, uint cap);
    }
}
