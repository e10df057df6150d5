// Why: what it costs SQLite to have its whole heap in guest memory (the guest heap, the VFS shim's copies,
// the engine's demand faults) against SQLite on ordinary process memory, with memory ample; per transaction mix.
using BenchmarkDotNet.Attributes;
using Microsoft.Data.Sqlite;
using PageLab.Core.Applications;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;

namespace PageLab.Bench;

/// <summary>
/// One invocation is 1,000 YCSB-B-style transactions (95% point reads, 5% updates of a 200-byte value, uniform
/// keys) on a 20,000-row database whose every page fits SQLite's cache. <c>OrdinaryMemory</c> is SQLite as
/// shipped (its own allocator, the C library's memory, its own VFS); <c>GuestMemory</c> is the same database
/// with SQLite's allocator installed over a 4,096-page guest heap in a PageLab VM and the VFS shim in place.
/// BenchmarkDotNet runs each in its own process, so SQLite's process-wide allocator is one or the other.
/// Linux x64 only (SqliteAllocator.Unsupported).
/// </summary>
[MemoryDiagnoser]
[MedianColumn]
public class SqliteBenchmarks
{
    private const int Rows = 20_000, Transactions = 1_000;
    private string? _dir;
    private HostArena? _arena;
    private GuestVm? _vm;
    private GuestOperatingSystem? _os;
    private SqliteGuest? _guest;
    private SqliteConnection? _db;
    private SqliteCommand? _read, _update;
    private readonly Random _rng = new(7);
    private readonly byte[] _value = new byte[200];

    [GlobalSetup(Target = nameof(OrdinaryMemory))]
    public void SetupOrdinary()
    {
        _dir = Directory.CreateTempSubdirectory("pagelab-bench-sqlite-").FullName;
        _db = new SqliteConnection($"Data Source={Path.Combine(_dir, "b.db")};Pooling=False");
        _db.Open();
        Load();
    }

    [GlobalSetup(Target = nameof(GuestMemory))]
    public void SetupGuest()
    {
        if (SqliteAllocator.Unsupported is { } why) throw new PlatformNotSupportedException(why);
        _dir = Directory.CreateTempSubdirectory("pagelab-bench-sqlite-").FullName;
        _arena = HostArena.Create(16_384, "pagelab-bench-sqlite");
        _vm = GuestVm.Create(_arena, "db", 8192, 64);
        _os = new GuestOperatingSystem(_vm, new GuestOsOptions { SwapDirectory = _dir });
        _guest = SqliteGuest.Start(_os, 4096, Path.Combine(_dir, "b.db"));
        _db = _guest.Open();
        Load();
    }

    private void Load()
    {
        using (SqliteCommand c = _db!.CreateCommand())
        {
            c.CommandText = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-12000; CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB)";
            c.ExecuteNonQuery();
        }
        using (SqliteTransaction t = _db.BeginTransaction())
        using (SqliteCommand ins = _db.CreateCommand())
        {
            ins.CommandText = "INSERT INTO kv VALUES ($k, $v)";
            ins.Parameters.Add("$k", SqliteType.Integer);
            ins.Parameters.Add("$v", SqliteType.Blob);
            for (int k = 0; k < Rows; k++)
            {
                _rng.NextBytes(_value);
                (ins.Parameters[0].Value, ins.Parameters[1].Value) = (k, _value);
                ins.ExecuteNonQuery();
            }
            t.Commit();
        }
        _read = _db.CreateCommand();
        _read.CommandText = "SELECT v FROM kv WHERE k = $k";
        _read.Parameters.Add("$k", SqliteType.Integer);
        _update = _db.CreateCommand();
        _update.CommandText = "UPDATE kv SET v = $v WHERE k = $k";
        _update.Parameters.Add("$k", SqliteType.Integer);
        _update.Parameters.Add("$v", SqliteType.Blob);
        Mix(); // every page in the cache before the first measured invocation
        for (int k = 0; k < Rows; k += 10) { _read.Parameters[0].Value = k; _read.ExecuteScalar(); }
    }

    private long Mix()
    {
        long bytes = 0;
        for (int i = 0; i < Transactions; i++)
        {
            int k = _rng.Next(Rows);
            if (_rng.Next(100) < 95)
            {
                _read!.Parameters[0].Value = k;
                bytes += ((byte[])_read.ExecuteScalar()!).Length;
            }
            else
            {
                _value[0] = (byte)i;
                (_update!.Parameters[0].Value, _update.Parameters[1].Value) = (k, _value);
                _update.ExecuteNonQuery();
            }
        }
        return bytes;
    }

    [Benchmark(Baseline = true)]
    public long OrdinaryMemory() => Mix();

    [Benchmark]
    public long GuestMemory() => Mix();

    [GlobalCleanup]
    public void Cleanup()
    {
        _read?.Dispose();
        _update?.Dispose();
        if (_guest is not null) _guest.Dispose();
        else _db?.Dispose();
        _os?.Dispose();
        _vm?.Dispose();
        _arena?.Dispose();
        if (_dir is not null) Directory.Delete(_dir, recursive: true);
    }
}
