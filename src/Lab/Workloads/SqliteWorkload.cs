// The `sqlite` workload (its kind and keys: SqliteKind.cs): a real SQLite database (a file in the run's temporary
// directory) whose whole heap is the VM's guest heap, driven by YCSB A/B/C-style read/update mixes over Zipf keys
// or a TPC-B-like write mix, on one or more threads. Every read is checked against a shadow of what was written;
// the application adapts its cache to the memory condition (fixed, the guest's own free memory, or the hypervisor's).
using System.Diagnostics;
using System.IO.Hashing;
using Microsoft.Data.Sqlite;
using PageLab.Core.Applications;
using PageLab.Core.Condition;
using PageLab.Core.GuestOs;
using SQLitePCL;
using PageLab.Lab.Observation;

namespace PageLab.Lab.Workloads;

public sealed class SqliteWorkload : IApplicationWorkload, IDisposable
{
    private readonly SqliteSpec _spec;
    private readonly SqliteGuest _guest;
    private readonly Worker[] _workers;
    private readonly string _dir;
    private readonly List<double> _latencyMs = new();
    private readonly Lock _gate = new();
    private long _transactions, _failed, _wrong, _shrinks;
    private double _busySeconds;
    private int _cachePages, _wantPages;
    private MemoryLevel _level = MemoryLevel.Plenty;

    /// <param name="heapPages">The heap: a run of that many guest pages reserved for SQLite (pinned).</param>
    /// <param name="directory">Where its database file goes (a directory of its own in there, removed on Dispose).</param>
    public SqliteWorkload(GuestOperatingSystem os, ulong heapPages, SqliteSpec spec, string directory)
    {
        _spec = spec;
        _dir = Path.Combine(directory, $"pagelab-sqlite-{Environment.ProcessId}-{os.Vm.Name}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(_dir);
        try
        {
            _guest = SqliteGuest.Start(os, heapPages, Path.Combine(_dir, "app.db"));
        }
        catch
        {
            Directory.Delete(_dir, recursive: true);
            throw;
        }
        _cachePages = _wantPages = _spec.CachePages;
        _workers = new Worker[_spec.Threads];
        try
        {
            for (int t = 0; t < _workers.Length; t++) _workers[t] = new Worker(this, t, _guest.Open());
            _workers[0].Load();
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public GuestProcess Process => _guest.Heap.Process;
    public GuestHeap Heap => _guest.Heap;
    public SqliteSpec Spec => _spec;

    /// <summary>The memory condition the application adapts to, given its last level (set by the runner; none: plenty).</summary>
    public Func<MemoryLevel, MemoryConditionReport>? Condition { get; set; }

    /// <summary>The thresholds the condition's levels follow (how much must stay available for plenty).</summary>
    public LevelThresholds Thresholds { get; set; } = new();

    /// <summary>adapt guest: the guest OS's free memory; hypervisor: the condition hypercall (fixed: neither is read).</summary>
    public void FollowCondition(LevelThresholds thresholds, Func<MemoryLevel, MemoryConditionReport> guestOs, Func<MemoryConditionReport> hypervisor)
    {
        Thresholds = thresholds;
        Condition = _spec.Adapt == "guest" ? guestOs : _ => hypervisor();
    }

    // SQLite's heap holds native pointers: a contained (zeroed) page under them could crash the process
    // (docs/applications.md).
    public string? RefusesUnprotectedErrors =>
        "an unprotected page of SQLite's heap (a contained zero page under native pointers could end the process)";

    /// <summary>Heap pages in use (its bytes over the page size).</summary>
    public ulong WorkingSetPages(int tick) => (ulong)(Heap.Stats.BytesInGuest / Process.Os.Vm.Arena.PageSize) + 1;

    public void Step(int tick, Random rng)
    {
        Adapt();
        int per = _spec.TransactionsPerTick / _workers.Length, extra = _spec.TransactionsPerTick % _workers.Length;
        int seed = rng.Next();
        long start = Stopwatch.GetTimestamp();
        if (_workers.Length == 1) _workers[0].Run(per + extra, seed);
        else Parallel.For(0, _workers.Length, new ParallelOptions { MaxDegreeOfParallelism = _workers.Length },
            t => _workers[t].Run(per + (t < extra ? 1 : 0), seed + t));
        _busySeconds += Stopwatch.GetElapsedTime(start).TotalSeconds;
    }

    // The memory condition drives the cache: low or critical shrinks it and gives whole free heap pages back
    // to the guest OS (where the balloon can take them); plenty takes back pages the guest has free and grows
    // it again, but only those available beyond what plenty needs (the level's clearing threshold): the pages
    // it gave back are themselves available, and taking them all back made the VM short again at once, so the
    // cache shrank and regrew every other tick while the host had memory to spare. In every mode the cache and
    // SQLite's soft heap limit fit the pages the heap holds (less a reserve for statements and sorting), so
    // SQLite recycles its cache rather than fail with SQLITE_NOMEM.
    private void Adapt()
    {
        MemoryConditionReport? c = _spec.Adapt == "fixed" || Condition is null ? null : Condition(_level);
        MemoryLevel level = c?.Level ?? MemoryLevel.Plenty;
        _level = level;
        int want = Math.Max(16, level switch { MemoryLevel.Critical => _spec.CachePages / 16, MemoryLevel.Low => _spec.CachePages / 4, _ => _spec.CachePages });
        long reserve = Math.Max(64, (long)Heap.RunPages / 16);
        if (want < _wantPages)
        {
            Configure(want);
            foreach (Worker w in _workers) w.Exec("PRAGMA shrink_memory");
            if (Heap.Shrink((int)Math.Max(0, Heap.Stats.WhollyFreePages - reserve)) > 0) _shrinks++;
        }
        else if (Heap.Stats.HeldPages < (long)Heap.RunPages && (want > _wantPages || level == MemoryLevel.Plenty))
        {
            long spare = c is null ? int.MaxValue
                : (long)c.TrueAvailablePages - (long)Math.Ceiling(Thresholds.LowClearsAbove * c.EffectivePages);
            if (spare > 0) Heap.Grow((int)Math.Min(spare, int.MaxValue));
        }
        _wantPages = want;
        long capBytes = Math.Max(0, Heap.Stats.HeldPages - reserve) * Process.Os.Vm.Arena.PageSize;
        raw.sqlite3_soft_heap_limit64(Math.Max(1, capBytes));
        Configure((int)Math.Clamp(Math.Min(want, capBytes / CacheEntryBytes), 16, int.MaxValue));
    }

    // A cached database page costs its 4 KiB, SQLite's header and the heap's rounding (5 KiB granules).
    private const long CacheEntryBytes = 5 * 1024;

    private void Configure(int cachePages)
    {
        if (cachePages == _cachePages) return;
        _cachePages = cachePages;
        foreach (Worker w in _workers) w.Exec($"PRAGMA cache_size={cachePages}");
    }

    /// <summary>The application's totals so far.</summary>
    public AppTotals Totals()
    {
        GuestHeapStats s = Heap.Stats;
        long hits = 0, misses = 0;
        foreach (Worker w in _workers)
        {
            (long h, long m) = SqliteGuest.CacheCounts(w.Connection);
            hits += h;
            misses += m;
        }
        double[] sorted;
        lock (_gate) sorted = _latencyMs.Order().ToArray();
        double Pct(double p) => sorted.Length == 0 ? 0 : sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];
        return new AppTotals("sqlite", _transactions, _busySeconds > 0 ? _transactions / _busySeconds : 0, Pct(0.50), Pct(0.99),
            s.BytesInGuest, s.BytesOutsideGuest, hits, misses, _shrinks, _wrong) { FailedTransactions = _failed };
    }

    public void Dispose()
    {
        _guest.Dispose();
        try { Directory.Delete(_dir, recursive: true); }
        catch (IOException) { } // best effort: a temp directory
    }

    // One thread of the application: its connection, and a shadow of the keys it alone writes (thread t owns
    // keys k with k % threads == t), so every read it makes has one right answer.
    private sealed class Worker
    {
        private readonly SqliteWorkload _app;
        private readonly int _t;
        private readonly int[] _version;     // per owned key: the version written last
        private readonly int[] _pending;     // per owned key: a version whose write failed midway (0: none)
        private readonly long[] _balance;    // tpcb: per owned account
        private readonly Zipf _zipf;
        private readonly SqliteCommand _read, _update, _tpcbAccount, _tpcbAccountRead, _tpcbTeller, _tpcbBranch, _tpcbHistory;
        public readonly SqliteConnection Connection;

        public Worker(SqliteWorkload app, int t, SqliteConnection c)
        {
            _app = app;
            _t = t;
            Connection = c;
            int owned = (app._spec.Rows - t + app._spec.Threads - 1) / app._spec.Threads;
            _version = new int[owned];
            _pending = new int[owned];
            _balance = new long[owned];
            _zipf = new Zipf(owned, app._spec.ZipfTheta);
            Exec($"PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size={app._spec.CachePages}; PRAGMA busy_timeout=10000");
            _read = Command("SELECT v FROM kv WHERE k = $k", "$k");
            _update = Command("UPDATE kv SET v = $v WHERE k = $k", "$k", "$v");
            _tpcbAccount = Command("UPDATE accounts SET abal = abal + $d WHERE aid = $k", "$k", "$d");
            _tpcbAccountRead = Command("SELECT abal FROM accounts WHERE aid = $k", "$k");
            _tpcbTeller = Command("UPDATE tellers SET tbal = tbal + $d WHERE tid = $k", "$k", "$d");
            _tpcbBranch = Command("UPDATE branches SET bbal = bbal + $d WHERE bid = $k", "$k", "$d");
            _tpcbHistory = Command("INSERT INTO history(aid, tid, bid, delta) VALUES ($k, $t, $b, $d)", "$k", "$t", "$b", "$d");
        }

        private SqliteCommand Command(string sql, params string[] names)
        {
            SqliteCommand c = Connection.CreateCommand();
            c.CommandText = sql;
            foreach (string n in names) c.Parameters.Add(n, n == "$v" ? SqliteType.Blob : SqliteType.Integer);
            return c;
        }

        public void Exec(string sql)
        {
            using SqliteCommand c = Connection.CreateCommand();
            c.CommandText = sql;
            c.ExecuteNonQuery();
        }

        // The database at version 0 of every key (created by the first worker, before any runs).
        public void Load()
        {
            SqliteSpec s = _app._spec;
            Exec("CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB); CREATE TABLE accounts(aid INTEGER PRIMARY KEY, bid INTEGER, abal INTEGER);" +
                 "CREATE TABLE tellers(tid INTEGER PRIMARY KEY, tbal INTEGER); CREATE TABLE branches(bid INTEGER PRIMARY KEY, bbal INTEGER);" +
                 "CREATE TABLE history(hid INTEGER PRIMARY KEY, aid INTEGER, tid INTEGER, bid INTEGER, delta INTEGER)");
            using SqliteTransaction tx = Connection.BeginTransaction();
            using SqliteCommand kv = Command("INSERT INTO kv VALUES ($k, $v)", "$k", "$v");
            using SqliteCommand acc = Command("INSERT INTO accounts VALUES ($k, $b, 0)", "$k", "$b");
            for (int k = 0; k < s.Rows; k++)
            {
                if (s.Mix == "tpcb")
                {
                    (acc.Parameters[0].Value, acc.Parameters[1].Value) = (k, k % Branches(s));
                    acc.ExecuteNonQuery();
                }
                else
                {
                    (kv.Parameters[0].Value, kv.Parameters[1].Value) = (k, Value(k, 0, s.ValueBytes));
                    kv.ExecuteNonQuery();
                }
            }
            if (s.Mix == "tpcb")
            {
                Exec($"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {Tellers(s)}) INSERT INTO tellers SELECT i, 0 FROM n;" +
                     $"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {Branches(s)}) INSERT INTO branches SELECT i, 0 FROM n");
            }
            tx.Commit();
        }

        private static int Branches(SqliteSpec s) => Math.Max(1, s.Rows / 10_000);
        private static int Tellers(SqliteSpec s) => Math.Max(1, s.Rows / 1_000);

        // A key's bytes at a version: a function of both alone, so a read has one right answer.
        private static byte[] Value(int k, int version, int bytes)
        {
            var v = new byte[bytes];
            ulong x = XxHash3.HashToUInt64(BitConverter.GetBytes((long)k << 32 | (uint)version));
            for (int i = 0; i < bytes; i++)
            {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                v[i] = (byte)x;
            }
            return v;
        }

        public void Run(int transactions, int seed)
        {
            var rng = new Random(seed);
            var lat = new double[transactions];
            int done = 0;
            for (int i = 0; i < transactions; i++)
            {
                long start = Stopwatch.GetTimestamp();
                bool ok = _app._spec.Mix == "tpcb" ? TpcB(rng) : Ycsb(rng);
                if (!ok) { Interlocked.Increment(ref _app._failed); continue; }
                lat[done++] = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            }
            lock (_app._gate) _app._latencyMs.AddRange(lat.AsSpan(0, done));
            Interlocked.Add(ref _app._transactions, done);
        }

        private int Key(Random rng) => _zipf.Next(rng);
        private int RowOf(int owned) => owned * _app._spec.Threads + _t;

        private bool Ycsb(Random rng)
        {
            double readShare = _app._spec.Mix switch { "ycsb-a" => 0.5, "ycsb-c" => 1.0, _ => 0.95 };
            int o = Key(rng), k = RowOf(o);
            try
            {
                if (rng.NextDouble() < readShare)
                {
                    _read.Parameters[0].Value = k;
                    byte[]? got = _read.ExecuteScalar() as byte[];
                    Check(o, got);
                    return true;
                }
                int next = _version[o] + 1;
                _pending[o] = next;
                (_update.Parameters[0].Value, _update.Parameters[1].Value) = (k, Value(k, next, _app._spec.ValueBytes));
                _update.ExecuteNonQuery();
                _version[o] = next;
                _pending[o] = 0;
                return true;
            }
            catch (SqliteException) { return false; } // NOMEM (the heap is full) or busy: rolled back, retried later
        }

        // A read is right if it is the last version written, or one whose write failed midway (it may have
        // reached the file); the first read after such a failure settles which.
        private void Check(int o, byte[]? got)
        {
            int k = RowOf(o);
            if (got is not null && got.AsSpan().SequenceEqual(Value(k, _version[o], _app._spec.ValueBytes))) { _pending[o] = 0; return; }
            if (got is not null && _pending[o] != 0 && got.AsSpan().SequenceEqual(Value(k, _pending[o], _app._spec.ValueBytes)))
            {
                _version[o] = _pending[o];
                _pending[o] = 0;
                return;
            }
            Interlocked.Increment(ref _app._wrong);
        }

        private bool TpcB(Random rng)
        {
            SqliteSpec s = _app._spec;
            int o = Key(rng), a = RowOf(o), d = rng.Next(-5000, 5001);
            int teller = rng.Next(Tellers(s)), branch = a % Branches(s);
            try
            {
                using (SqliteTransaction tx = Connection.BeginTransaction())
                {
                    foreach (SqliteCommand c in new[] { _tpcbAccount, _tpcbAccountRead, _tpcbTeller, _tpcbBranch, _tpcbHistory }) c.Transaction = tx;
                    (_tpcbAccount.Parameters[0].Value, _tpcbAccount.Parameters[1].Value) = (a, d);
                    _tpcbAccount.ExecuteNonQuery();
                    _tpcbAccountRead.Parameters[0].Value = a;
                    long balance = (long)_tpcbAccountRead.ExecuteScalar()!;
                    if (balance != _balance[o] + d) Interlocked.Increment(ref _app._wrong);
                    (_tpcbTeller.Parameters[0].Value, _tpcbTeller.Parameters[1].Value) = (teller, d);
                    _tpcbTeller.ExecuteNonQuery();
                    (_tpcbBranch.Parameters[0].Value, _tpcbBranch.Parameters[1].Value) = (branch, d);
                    _tpcbBranch.ExecuteNonQuery();
                    (_tpcbHistory.Parameters[0].Value, _tpcbHistory.Parameters[1].Value, _tpcbHistory.Parameters[2].Value, _tpcbHistory.Parameters[3].Value) = (a, teller, branch, d);
                    _tpcbHistory.ExecuteNonQuery();
                    tx.Commit();
                }
                _balance[o] += d;
                return true;
            }
            catch (SqliteException) { return false; } // rolled back as a whole: the shadow did not change
        }
    }

    // YCSB's Zipfian generator (Gray et al., "Quickly generating billion-record synthetic databases"), with
    // the rank scrambled by a hash so the hot keys spread over the table as YCSB's scrambled Zipfian does.
    private sealed class Zipf
    {
        private readonly int _n;
        private readonly double _theta, _alpha, _zetan, _eta;

        public Zipf(int n, double theta)
        {
            _n = Math.Max(1, n);
            _theta = theta;
            double zeta2 = 1 + Math.Pow(0.5, theta);
            for (int i = 1; i <= _n; i++) _zetan += 1 / Math.Pow(i, theta);
            _alpha = 1 / (1 - theta);
            _eta = (1 - Math.Pow(2.0 / _n, 1 - theta)) / (1 - zeta2 / _zetan);
        }

        public int Next(Random rng)
        {
            double u = rng.NextDouble(), uz = u * _zetan;
            long rank = uz < 1 ? 0 : uz < 1 + Math.Pow(0.5, _theta) ? 1 : (long)(_n * Math.Pow(_eta * u - _eta + 1, _alpha));
            rank = Math.Clamp(rank, 0, _n - 1);
            return (int)(XxHash3.HashToUInt64(BitConverter.GetBytes(rank)) % (ulong)_n);
        }
    }
}
