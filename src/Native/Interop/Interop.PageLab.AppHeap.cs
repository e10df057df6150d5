// Declarations of the guest application heap (c/appheap.c) and SQLite's allocator over it (c/appsqlite.c).
// Buffers passed in are managed arrays or stack memory, never guest memory.
using System.Runtime.InteropServices;

namespace PageLab.Native;

internal static unsafe partial class Interop
{
    internal static partial class PageLab
    {
        /// <summary>pl_app_stats order.</summary>
        public const int AppStats = 9;

        [LibraryImport(Lib, EntryPoint = "pl_app_create")] public static partial int AppCreate(int region, ulong first, ulong pages);
        [LibraryImport(Lib, EntryPoint = "pl_app_destroy")] public static partial int AppDestroy(int region);
        [LibraryImport(Lib, EntryPoint = "pl_app_malloc")] public static partial nint AppMalloc(long n);
        [LibraryImport(Lib, EntryPoint = "pl_app_free")] public static partial void AppFree(nint p);
        [LibraryImport(Lib, EntryPoint = "pl_app_release")] public static partial int AppRelease(int region, ulong* pages, uint max);
        [LibraryImport(Lib, EntryPoint = "pl_app_acquire")] public static partial int AppAcquire(int region, ulong* pages, uint n);
        [LibraryImport(Lib, EntryPoint = "pl_app_stats")] public static partial int AppStatsRead(int region, long* stats, int n);
        [LibraryImport(Lib, EntryPoint = "pl_app_sqlite_install")] public static partial int AppSqliteInstall(nint sqlite3Config);
        [LibraryImport(Lib, EntryPoint = "pl_app_sqlite_vfs")] public static partial int AppSqliteVfs(nint sqlite3VfsFind, nint sqlite3VfsRegister);
    }
}
