// SQLite as a guest application: every byte SQLite allocates (page cache, schema, statements) comes from the
// guest heap (GuestHeap, c/appheap.c) through SQLITE_CONFIG_MALLOC, so the engine's mechanisms act on a real
// database's memory. Linux x64 only this round: the variadic sqlite3_config call is verified there.
using System.Runtime.InteropServices;
using Microsoft.Data.Sqlite;
using PageLab.Core.GuestOs;
using SQLitePCL;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Core.Applications;

/// <summary>Installs libpagelab's allocator as SQLite's, once per process. While no guest heap is installed
/// it serves SQLite from the C library and counts those bytes as outside guest memory.</summary>
public static class SqliteAllocator
{
    private static readonly Lock Gate = new();
    private static bool _installed;
    private static nint _vfsFind, _vfsRegister;

    /// <summary>Null where the allocator works; else why not (the platform).</summary>
    public static string? Unsupported =>
        OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64 ? null
            : "SQLite in guest memory calls the variadic sqlite3_config(SQLITE_CONFIG_MALLOC), verified on Linux x64 only";

    public static void EnsureInstalled()
    {
        lock (Gate)
        {
            if (_installed) return;
            if (Unsupported is { } why) throw new PlatformNotSupportedException(why);
            Batteries_V2.Init();
            // The provider loaded e_sqlite3 already; this finds the same library (the loader counts references).
            nint lib = NativeLibrary.Load("e_sqlite3", typeof(raw).Assembly, null);
            nint config = NativeLibrary.GetExport(lib, "sqlite3_config");
            _vfsFind = NativeLibrary.GetExport(lib, "sqlite3_vfs_find");
            _vfsRegister = NativeLibrary.GetExport(lib, "sqlite3_vfs_register");
            // sqlite3_config is refused (SQLITE_MISUSE) once SQLite is initialised: shut it down first.
            SqliteConnection.ClearAllPools();
            Check(raw.sqlite3_shutdown(), "sqlite3_shutdown");
            Check(Lib.AppSqliteInstall(config), "sqlite3_config(SQLITE_CONFIG_MALLOC)");
            _installed = true;
        }
    }

    /// <summary>Initialises SQLite and makes libpagelab's VFS shim its default (c/appvfs.c: the kernel never
    /// reads or writes guest memory for SQLite, where an inaccessible page would be EFAULT, not a fault).
    /// SQLite's initialisation registers its own default VFS, so this follows every sqlite3_initialize.</summary>
    public static void Initialize()
    {
        EnsureInstalled();
        Check(raw.sqlite3_initialize(), "sqlite3_initialize");
        Check(Lib.AppSqliteVfs(_vfsFind, _vfsRegister), "sqlite3_vfs_register (the guest-memory VFS shim)");
    }

    /// <summary>SQLite's own count of the bytes it holds (sqlite3_memory_used).</summary>
    public static long MemoryUsed => raw.sqlite3_memory_used();

    internal static void Check(int rc, string what)
    {
        if (rc != raw.SQLITE_OK) throw new InvalidOperationException($"{what} returned SQLite code {rc}");
    }
}

/// <summary>SQLite running in a guest: the process's guest heap over a run of the VM's guest pages, SQLite
/// initialised on it, and the connections it opened (closed, with SQLite shut down, on Dispose so no block
/// outlives the heap).</summary>
public sealed class SqliteGuest : IDisposable
{
    private readonly List<SqliteConnection> _connections = new();
    private readonly Lock _gate = new();
    private bool _disposed;

    private SqliteGuest(GuestHeap heap, string databasePath)
    {
        Heap = heap;
        DatabasePath = databasePath;
    }

    public GuestHeap Heap { get; }
    public string DatabasePath { get; }

    /// <summary>Reserves <paramref name="heapPages"/> guest pages of <paramref name="os"/>'s VM as SQLite's
    /// heap and starts SQLite on it. Everything SQLite held before is freed first (sqlite3_shutdown), so
    /// from here every byte it holds is in guest memory.</summary>
    public static SqliteGuest Start(GuestOperatingSystem os, ulong heapPages, string databasePath)
    {
        SqliteAllocator.EnsureInstalled();
        SqliteConnection.ClearAllPools();
        SqliteAllocator.Check(raw.sqlite3_shutdown(), "sqlite3_shutdown");
        GuestHeap heap = GuestHeap.Create(os, "sqlite", heapPages);
        try
        {
            SqliteAllocator.Initialize();
        }
        catch
        {
            heap.Dispose();
            throw;
        }
        return new SqliteGuest(heap, databasePath);
    }

    /// <summary>An open connection to the database (no pooling: closing it frees its memory).</summary>
    public SqliteConnection Open()
    {
        var c = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = DatabasePath, Pooling = false }.ToString());
        c.Open();
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _connections.Add(c);
        }
        return c;
    }

    /// <summary>Closes a connection this guest opened (its memory goes back to the heap).</summary>
    public void Close(SqliteConnection c)
    {
        lock (_gate) _connections.Remove(c);
        c.Dispose();
    }

    /// <summary>SQLite's page cache hits and misses on a connection (sqlite3_db_status CACHE_HIT / CACHE_MISS).</summary>
    public static (long Hits, long Misses) CacheCounts(SqliteConnection c)
    {
        const int cacheHit = 7, cacheMiss = 8; // SQLITE_DBSTATUS_CACHE_HIT / _MISS
        raw.sqlite3_db_status(c.Handle, cacheHit, out int hits, out _, 0);
        raw.sqlite3_db_status(c.Handle, cacheMiss, out int misses, out _, 0);
        return (hits, misses);
    }

    /// <summary>Closes every connection, shuts SQLite down (it frees all it holds) and removes the heap.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed) return;
            _disposed = true;
            foreach (SqliteConnection c in _connections) c.Dispose();
            _connections.Clear();
        }
        SqliteConnection.ClearAllPools();
        SqliteAllocator.Check(raw.sqlite3_shutdown(), "sqlite3_shutdown");
        Heap.Dispose();
    }
}
