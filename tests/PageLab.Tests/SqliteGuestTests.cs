// SQLite with its whole heap in a VM's guest memory: every byte it holds is in the guest heap, and each
// engine mechanism (ballooning, host swap, sharing with copy-on-write, parity recovery) acting on its pages
// leaves every query answer identical to the same queries on ordinary process memory.
using System.IO.Hashing;
using Microsoft.Data.Sqlite;
using PageLab.Core;
using PageLab.Core.Applications;
using PageLab.Core.Balloon;
using PageLab.Core.Condition;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Recovery;
using PageLab.Lab.Workloads;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

// SQLite's allocator is process-wide: these tests rely on the assembly running one test at a time
// (AssemblyInfo.cs: one collection per assembly).
public sealed unsafe class SqliteGuestTests : IDisposable
{
    private const int Rows = 8000, Rounds = 6;
    private const ulong VmPages = 8192, HeapPages = 4096;
    private readonly string _dir = Directory.CreateTempSubdirectory("pagelab-sqlite-").FullName;

    private static void SkipUnsupported()
    {
        if (SqliteAllocator.Unsupported is { } why) Assert.Skip(why);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // The same database, built row by row from the row number only.
    private static void Build(SqliteConnection c)
    {
        Exec(c, "PRAGMA journal_mode=WAL; PRAGMA cache_size=-16000; CREATE TABLE kv(k INTEGER PRIMARY KEY, grp INTEGER, v BLOB)");
        using SqliteTransaction t = c.BeginTransaction();
        using SqliteCommand ins = c.CreateCommand();
        ins.CommandText = "INSERT INTO kv VALUES ($k, $g, $v)";
        SqliteParameter k = ins.Parameters.Add("$k", SqliteType.Integer), g = ins.Parameters.Add("$g", SqliteType.Integer),
            v = ins.Parameters.Add("$v", SqliteType.Blob);
        for (int i = 0; i < Rows; i++)
        {
            var b = new byte[200 + i % 97];
            for (int j = 0; j < b.Length; j++) b[j] = (byte)(i * 31 + j * 7);
            (k.Value, g.Value, v.Value) = (i, i % 50, b);
            ins.ExecuteNonQuery();
        }
        t.Commit();
    }

    private static void Exec(SqliteConnection c, string sql)
    {
        using SqliteCommand cmd = c.CreateCommand();
        cmd.CommandText = sql;
        cmd.ExecuteNonQuery();
    }

    // One round of updates and reads; every result row goes into the checksum.
    private static ulong Round(SqliteConnection c, int round, XxHash64 hash)
    {
        using (SqliteTransaction t = c.BeginTransaction())
        {
            Exec(c, $"UPDATE kv SET v = zeroblob(64) || v WHERE k % 97 = {round}");
            Exec(c, $"UPDATE kv SET grp = (grp + {round}) % 50 WHERE k % 13 = {round % 13}");
            t.Commit();
        }
        foreach (string sql in new[]
                 {
                     "SELECT grp, count(*), sum(length(v)), total(k) FROM kv GROUP BY grp ORDER BY grp",
                     $"SELECT k, v FROM kv WHERE k BETWEEN {round * 900} AND {round * 900 + 400} ORDER BY k",
                     "SELECT k, hex(substr(v, 60, 16)) FROM kv WHERE k % 101 = 3 ORDER BY k DESC",
                 })
        {
            using SqliteCommand q = c.CreateCommand();
            q.CommandText = sql;
            using SqliteDataReader r = q.ExecuteReader();
            while (r.Read())
                for (int i = 0; i < r.FieldCount; i++)
                {
                    object o = r.GetValue(i);
                    hash.Append(o is byte[] b ? b : System.Text.Encoding.UTF8.GetBytes(Convert.ToString(o, System.Globalization.CultureInfo.InvariantCulture)!));
                }
        }
        return hash.GetCurrentHashAsUInt64();
    }

    // The answers on ordinary memory: no guest heap installed, so SQLite's blocks come from the C library.
    private ulong[] Reference()
    {
        SqliteAllocator.EnsureInstalled();
        string path = Path.Combine(_dir, "reference.db");
        var sums = new ulong[Rounds];
        using (var c = new SqliteConnection($"Data Source={path};Pooling=False"))
        {
            c.Open();
            Build(c);
            var hash = new XxHash64();
            for (int r = 0; r < Rounds; r++) sums[r] = Round(c, r, hash);
        }
        return sums;
    }

    private sealed class Guest : IDisposable
    {
        public readonly TestArena Arena = new(3 * (uint)VmPages);
        public readonly GuestVm Vm;
        public readonly GuestOperatingSystem Os;
        public readonly SqliteGuest Sqlite;
        public readonly SqliteConnection Db;
        private readonly XxHash64 _hash = new();

        public Guest(string dir)
        {
            Vm = Arena.Vm("sqlite-vm", VmPages);
            Os = new GuestOperatingSystem(Vm, new GuestOsOptions { SwapDirectory = dir });
            Sqlite = SqliteGuest.Start(Os, HeapPages, Path.Combine(dir, "guest.db"));
            Db = Sqlite.Open();
            Build(Db);
        }

        public ulong Round(int r) => SqliteGuestTests.Round(Db, r, _hash);

        // Run pages the application holds that have a frame now.
        public List<GuestPage> BackedHeapPages() =>
            Sqlite.Heap.HeldPages().Where(g => Vm.StateOf(g) == GuestPageState.Backed).ToList();

        public void Dispose()
        {
            Sqlite.Dispose();
            Os.Dispose();
            Arena.Dispose();
        }
    }

    [Fact]
    public void Every_byte_SQLite_holds_is_in_the_guest_heap_and_its_answers_match_ordinary_memory()
    {
        SkipUnsupported();
        ulong[] expected = Reference();
        using var g = new Guest(_dir);
        for (int r = 0; r < Rounds; r++) Assert.Equal(expected[r], g.Round(r));
        GuestHeapStats s = g.Sqlite.Heap.Stats;
        Assert.True(s.BytesInGuest > 2_000_000, $"SQLite holds only {s.BytesInGuest} bytes: the page cache is not in the heap");
        Assert.Equal(SqliteAllocator.MemoryUsed, s.BytesInGuest);
        Assert.Equal(0, s.BytesOutsideGuest);
        Assert.True(g.Vm.Counters.DemandFaults > 0, "SQLite's first touches of its heap are the engine's demand-zero faults");
    }

    [Fact]
    public void Pages_SQLite_gives_back_go_to_the_balloon_and_answers_stay_the_same()
    {
        SkipUnsupported();
        ulong[] expected = Reference();
        using var g = new Guest(_dir);
        Assert.Equal(expected[0], g.Round(0));
        long before = g.Sqlite.Heap.Stats.BytesInGuest;
        Exec(g.Db, "PRAGMA cache_size=16; PRAGMA shrink_memory");
        // Give back all but a reserve SQLite keeps for what it allocates next (without it: SQLITE_NOMEM).
        int released = g.Sqlite.Heap.Shrink((int)g.Sqlite.Heap.Stats.WhollyFreePages - 1024);
        Assert.True(released > 200, $"only {released} pages given back after shrinking a {before}-byte SQLite");
        ulong first = g.Sqlite.Heap.First.Value;
        List<GuestPage> given = Enumerable.Range(0, (int)g.Sqlite.Heap.RunPages).Select(v => new GuestPage(first + (ulong)v))
            .Where(p => !g.Sqlite.Heap.Process.IsResident(p.Value - first)).ToList();
        Assert.Equal(released, given.Count);
        Assert.All(given, p => Assert.True(g.Os.IsFree(p)));
        // The balloon inflates by the pages just freed: the guest's LIFO free list hands out exactly those.
        var app = new BalloonApplication(g.Os, g.Vm.Id);
        var backend = new BalloonBackend(g.Os, app);
        app.SetTarget((ulong)released);
        ReclaimResult taken = backend.Inflate(released);
        g.Arena.Arena.Release(taken.Frames);
        Assert.Equal(released, taken.Frames.Length);
        Assert.All(given, p => Assert.False(g.Os.IsFree(p)));
        Assert.All(given, p => Assert.Equal(GuestPageState.Unbacked, g.Vm.StateOf(p)));
        Assert.Equal(0, g.Sqlite.Heap.Grow(released)); // the balloon holds them: SQLite cannot take them back
        for (int r = 1; r < Rounds; r++) Assert.Equal(expected[r], g.Round(r));
        Assert.Equal(SqliteAllocator.MemoryUsed, g.Sqlite.Heap.Stats.BytesInGuest);
    }

    [Fact]
    public void SQLite_pages_the_host_swapped_out_come_back_in_the_handler_with_the_same_answers()
    {
        SkipUnsupported();
        ulong[] expected = Reference();
        using var g = new Guest(_dir);
        Assert.Equal(expected[0], g.Round(0));
        List<GuestPage> heap = g.BackedHeapPages();
        g.Vm.HostSwapOut(int.MaxValue);
        Assert.True(heap.Count(p => g.Vm.StateOf(p) == GuestPageState.Swapped) > 500, "the host swapped SQLite's pages out");
        // A frame limit well below what SQLite uses keeps the engine swapping its pages while it runs.
        g.Vm.SetFrameLimit((ulong)heap.Count / 3);
        for (int r = 1; r < Rounds; r++) Assert.Equal(expected[r], g.Round(r));
        Assert.True(g.Vm.Counters.HostSwapIns > 500, $"{g.Vm.Counters.HostSwapIns} swap-ins");
        Assert.True(g.Vm.Counters.HostSwapOuts > 0);
    }

    [Fact]
    public void SQLite_pages_merged_with_another_VM_break_copy_on_write_and_answers_stay_the_same()
    {
        SkipUnsupported();
        ulong[] expected = Reference();
        using var g = new Guest(_dir);
        Assert.Equal(expected[0], g.Round(0));
        GuestVm other = g.Arena.Vm("other", VmPages);
        g.Vm.EnableSharing();
        other.EnableSharing();
        int merged = 0;
        ulong i = 0;
        foreach (GuestPage p in g.BackedHeapPages())
        {
            // Another VM holds the same bytes (as a VM booted from the same image would): merge onto its frame.
            var twin = new GuestPage(i++);
            g.Vm.Page(p).CopyTo(other.Page(twin));
            if (other.ShareCreate(twin) is HostFrame f && g.Vm.TryShare(p, f) == ShareResult.Merged) merged++;
        }
        Assert.True(merged > 500, $"only {merged} SQLite pages merged");
        ulong cowBefore = g.Vm.Counters.CowBreaks;
        for (int r = 1; r < Rounds; r++) Assert.Equal(expected[r], g.Round(r));
        Assert.True(g.Vm.Counters.CowBreaks - cowBefore > 10, "SQLite's writes broke sharings copy-on-write");
        // The other VM's pages kept their bytes: a write through SQLite never reached the shared frame.
        Assert.Equal(0UL, g.Vm.Counters.Contained);
    }

    [Fact]
    public void Errors_in_protected_SQLite_pages_are_recovered_and_every_answer_stays_the_same()
    {
        SkipUnsupported();
        ulong[] expected = Reference();
        using var g = new Guest(_dir);
        Assert.Equal(expected[0], g.Round(0));
        var engine = new RecoveryEngine(g.Vm);
        List<GuestPage> heap = g.BackedHeapPages();
        Assert.True(engine.Protect(heap, PageCategory.KernelLike) > 500);
        var rng = new Random(21);
        var reports = new List<HostFrame>();
        // One error per parity group: two in one group are beyond parity, and a page contained (zeroed) under
        // SQLite's pointers would crash the process (the scenario injector refuses such errors, docs/applications.md).
        var groups = new HashSet<int>();
        foreach (GuestPage p in heap.OrderBy(_ => rng.Next()).Where(p => g.Vm.GroupOf(p) is int k && groups.Add(k)).Take(200))
        {
            (int offset, byte[] mask) = MemoryErrorInjector.Pattern(ErrorKind.MultiBit, g.Arena.Arena.PageSize, rng);
            if (MemoryErrorInjector.IntoPage(g.Vm, p, offset, mask, onlyIfProtected: true) is HostFrame f) reports.Add(f);
        }
        Assert.True(reports.Count > 100, $"only {reports.Count} errors landed in protected pages");
        // SQLite touches some poisoned pages before the reports arrive: the handler rebuilds them from parity.
        for (int r = 1; r < Rounds / 2; r++) Assert.Equal(expected[r], g.Round(r));
        foreach (HostFrame f in reports)
            Assert.NotEqual(ErrorOutcome.Contained, engine.Report(f).Outcome);
        for (int r = Rounds / 2; r < Rounds; r++) Assert.Equal(expected[r], g.Round(r));
        Assert.Equal(0UL, g.Vm.Counters.Contained);
        Assert.True(g.Vm.Counters.HandlerRecoveries > 0, "SQLite met poisoned pages that the handler recovered");
        engine.Dispose();
    }

    // A small run of the sqlite workload beside a VM that grows: the app object's numbers and its checks.
    private static Scenario SqliteScenario(string adapt, string mix = "ycsb-a", int threads = 2) => new()
    {
        Name = "sqlite-test", HostPages = 3072, Ticks = 30, SamplePeriodTicks = 5, Seed = 3,
        Vms =
        [
            new VmSpec { Name = "db", Pages = 2048, Workload = SqliteKind.Workload(1536,
                new SqliteSpec { Rows = 6000, Mix = mix, Threads = threads, TransactionsPerTick = 150, CachePages = 1000, Adapt = adapt }) },
            new VmSpec { Name = "growing", Pages = 2048, Workload = new WorkloadSpec { Kind = "growing", Pages = 200, EndPages = 1800, TouchesPerTick = 300 } },
        ],
        Injections = [new InjectionSpec { Tick = 10, Vm = "db", Kind = "MultiBit", Target = "user" }],
    };

    [Theory]
    [InlineData("fixed", "ycsb-a", 2)]
    [InlineData("hypervisor", "ycsb-b", 2)]
    [InlineData("guest", "tpcb", 2)]
    public void A_sqlite_workload_runs_in_a_scenario_with_every_answer_right_and_its_heap_all_in_guest_memory(string adapt, string mix, int threads)
    {
        SkipUnsupported();
        Scenario s = SqliteScenario(adapt, mix, threads);
        s.Validate();
        var events = new List<RunEvent>();
        using var runner = new ScenarioRunner(s, _dir);
        runner.EventRaised += events.Add;
        runner.Boot();
        TickSnapshot last = runner.Advance();
        while (runner.Tick < s.Ticks) last = runner.Advance();
        AppTotals app = last.Vms[0].App!;
        Assert.Null(last.Vms[1].App);
        Assert.Equal("sqlite", app.Kind);
        Assert.True(app.Transactions > 30 * 150 * 9 / 10, $"{app.Transactions} transactions, {app.FailedTransactions} failed");
        Assert.Equal(0, app.WrongResults);
        Assert.Equal(SqliteAllocator.MemoryUsed, app.HeapBytesInGuest);
        Assert.Equal(0, app.HeapBytesOutsideGuest);
        Assert.True(app.CacheHits > 0 && app.LatencyP99Ms >= app.LatencyP50Ms);
        Assert.Empty(runner.CheckAccounting());
        // An unprotected error into SQLite's heap is refused, never injected under its pointers.
        RunEvent injection = Assert.Single(events, e => e.Kind == RunEventKind.Injection);
        Assert.True(injection.Missed);
        Assert.Contains("refused", injection.Detail);
    }

    // The condition's report, as the hypercall gives it: a level and the pages available out of the VM's.
    private static MemoryConditionReport Report(MemoryLevel level, ulong available, ulong effective) =>
        new(0, level, available, available, effective, effective, 0, 0, 0, 0, 0, 0);

    // After a shrink the pages SQLite gave back are free guest pages, so they count as available: taking them
    // all back on the next plenty made its VM short at once, and the cache shrank and regrew every other tick.
    [Fact]
    public void On_plenty_SQLite_takes_back_only_the_pages_available_beyond_plentys_clearing_threshold()
    {
        SkipUnsupported();
        using var arena = new TestArena(4096);
        GuestVm vm = arena.Vm("db", 2048);
        using var os = new GuestOperatingSystem(vm, new GuestOsOptions { SwapDirectory = _dir });
        using var app = new SqliteWorkload(os, 1536, new SqliteSpec { Rows = 6000, CachePages = 1000, TransactionsPerTick = 300, Adapt = "hypervisor" }, _dir);
        var rng = new Random(3);
        MemoryConditionReport condition = Report(MemoryLevel.Plenty, 1000, 2048);
        app.Condition = _ => condition;
        for (int t = 1; t <= 3; t++) app.Step(t, rng);
        long full = app.Heap.Stats.HeldPages;

        condition = Report(MemoryLevel.Critical, 0, 2048);
        app.Step(4, rng);
        long shrunk = app.Heap.Stats.HeldPages;
        Assert.True(full - shrunk > 500, $"held {full} pages, {shrunk} after the shrink");

        // Plenty, with 400 pages available of 2048: plenty lasts while more than 15% (308) are, so 92 may be taken.
        condition = Report(MemoryLevel.Plenty, 400, 2048);
        app.Step(5, rng);
        long grown = app.Heap.Stats.HeldPages - shrunk;
        long spare = 400 - (long)Math.Ceiling(app.Thresholds.LowClearsAbove * 2048);
        Assert.InRange(grown, 1, spare);
        AppTotals totals = app.Totals();
        Assert.Equal(0, totals.WrongResults);
        Assert.Equal(0, totals.FailedTransactions);
    }

    [Fact]
    public void A_second_sqlite_VM_is_refused_with_the_reason()
    {
        Scenario s = SqliteScenario("fixed");
        s = s with { Vms = [s.Vms[0], s.Vms[0] with { Name = "db2" }] };
        var e = Assert.Throws<ScenarioException>(() => s.Validate());
        Assert.Contains(SqliteAllocator.Unsupported ?? "only one VM per scenario may run sqlite", e.Message);
    }

    private static string SqliteJson(string workload, string image = "") =>
        $$"""{ "hostPages": 3072, "vms": [ { "name": "db", "pages": 2048, "kernelPages": 64{{image}}, "workload": {{workload}} } ] }""";

    [Theory]
    [InlineData("""{ "kind": "sqlite", "pages": 200 }""", "", "vms[0].workload.pages: the SQLite heap needs between 256 and 1888 pages (the VM's pages less its kernel, image and the guest's 96 free pages), got 200")]
    [InlineData("""{ "kind": "sqlite", "pages": 1800 }""", ", \"image\": { \"name\": \"base\", \"pages\": 100 }", "vms[0].workload.pages: the SQLite heap needs between 256 and 1788 pages (the VM's pages less its kernel, image and the guest's 96 free pages), got 1800")]
    [InlineData("""{ "kind": "sqlite", "pages": 1000, "sqlite": { "mix": "ycsb-z" } }""", "", "vms[0].workload.sqlite.mix: 'ycsb-z' is not one of ycsb-a, ycsb-b, ycsb-c, tpcb")]
    [InlineData("""{ "kind": "sqlite", "pages": 1000, "sqlite": { "adapt": "host" } }""", "", "vms[0].workload.sqlite.adapt: 'host' is not one of fixed, guest, hypervisor")]
    [InlineData("""{ "kind": "sqlite", "pages": 1000, "sqlite": { "rows": 4, "threads": 8 } }""", "", "vms[0].workload.sqlite.threads: 8 threads for 4 rows: each thread owns its keys")]
    [InlineData("""{ "kind": "sqlite", "pages": 1000, "sqlite": { "zipfTheta": 1 } }""", "", "vms[0].workload.sqlite.zipfTheta: must be in (0, 1), got 1")]
    [InlineData("""{ "kind": "sqlite", "pages": 1000, "sqlite": { "cachePages": 8 } }""", "", "vms[0].workload.sqlite.cachePages: must be between 16 and 10000000, got 8")]
    [InlineData("""{ "kind": "sqlite", "pages": 1000, "touchesPerTick": 5 }""", "", "vms[0].workload.touchesPerTick: unknown key 'touchesPerTick' (known here: kind, pages, sqlite)")]
    [InlineData("""{ "kind": "sqlite", "pages": 1000, "sqlite": { "rowz": 5 } }""", "", "vms[0].workload.sqlite.rowz: unknown key 'rowz' (known here: rows, valueBytes, mix, zipfTheta, threads, transactionsPerTick, adapt, cachePages)")]
    [InlineData("""{ "kind": "sqlite" }""", "", "vms[0].workload.pages: required, but missing (the SQLite heap")]
    [InlineData("""{ "kind": "active", "pages": 10, "sqlite": { "rows": 5 } }""", "", "vms[0].workload.sqlite: unknown key 'sqlite' (known here: kind, pages, endPages, freeAtTick, touchesPerTick)")]
    public void A_bad_sqlite_workload_is_refused_naming_the_key_and_value(string workload, string image, string expected)
    {
        if (!workload.Contains("active", StringComparison.Ordinal)) SkipUnsupported();
        var e = Assert.Throws<ScenarioException>(() => Scenario.Parse(SqliteJson(workload, image), "db.json"));
        Assert.StartsWith($"db.json: {expected}", e.Message);
    }

    [Fact]
    public void A_sqlite_workload_written_by_the_scenario_reads_back_with_its_sqlite_object()
    {
        SkipUnsupported(); // the scenario check refuses the kind where the allocator is not verified
        Scenario s = Scenario.Parse(SqliteJson("""{ "kind": "sqlite", "pages": 1000, "sqlite": { "rows": 500 } }"""), "db.json");
        SqliteSettings q = (SqliteSettings)WorkloadKinds.Find("sqlite")!.Settings(s.Vms[0].Workload);
        Assert.Equal(new SqliteSpec { Rows = 500 }, q.Sqlite);
        Assert.Equal(1000UL, q.Pages);
        Scenario again = Scenario.Parse(s.ToJson(), "again.json");
        Assert.Equal(s.Vms[0].Workload, again.Vms[0].Workload);
        Assert.Equal(SqliteKind.Workload(1000, new SqliteSpec { Rows = 500 }), s.Vms[0].Workload);
    }

    // Read-only queries over the whole table: their checksum is the database's, whatever memory it is in.
    private static ulong ReadChecksum(SqliteConnection c, int part)
    {
        var hash = new XxHash64();
        using SqliteCommand q = c.CreateCommand();
        q.CommandText = $"SELECT k, grp, v FROM kv WHERE k % 4 = {part % 4} ORDER BY k";
        using SqliteDataReader r = q.ExecuteReader();
        while (r.Read())
        {
            hash.Append(BitConverter.GetBytes(r.GetInt64(0)));
            hash.Append(BitConverter.GetBytes(r.GetInt64(1)));
            hash.Append((byte[])r.GetValue(2));
        }
        return hash.GetCurrentHashAsUInt64();
    }

    [Fact]
    public void Ten_thousand_errors_in_protected_pages_of_a_running_database_under_GC_stress_change_no_answer()
    {
        SkipUnsupported();
        var expected = new ulong[4];
        SqliteAllocator.EnsureInstalled();
        using (var c = new SqliteConnection($"Data Source={Path.Combine(_dir, "reference.db")};Pooling=False"))
        {
            c.Open();
            Build(c);
            for (int p = 0; p < 4; p++) expected[p] = ReadChecksum(c, p); // on ordinary memory
        }
        using var g = new Guest(_dir);
        SqliteConnection[] readers = [g.Sqlite.Open(), g.Sqlite.Open()];
        foreach (SqliteConnection c in readers) Exec(c, "PRAGMA cache_size=-16000");
        for (int p = 0; p < 4; p++) Assert.Equal(expected[p], ReadChecksum(readers[0], p));
        using var engine = new RecoveryEngine(g.Vm);
        engine.Protect(g.BackedHeapPages(), PageCategory.KernelLike);
        long reads = 0, wrong = 0;
        using var stop = new CancellationTokenSource();
        Exception? failure = null;
        Thread[] threads = readers.Select((c, t) => new Thread(() =>
        {
            try
            {
                for (int i = t; !stop.IsCancellationRequested; i++)
                {
                    if (ReadChecksum(c, i) != expected[i % 4]) Interlocked.Increment(ref wrong);
                    Interlocked.Increment(ref reads);
                }
            }
            catch (Exception e) { failure = e; }
        })).ToArray();
        using var gc = new GcStress();
        using Timer watchdog = GcStress.Watchdog(nameof(Ten_thousand_errors_in_protected_pages_of_a_running_database_under_GC_stress_change_no_answer));
        foreach (Thread t in threads) t.Start();
        var rng = new Random(10_000);
        int injected = 0, contained = 0, attempts = 0;
        List<GuestPage> heap = g.Sqlite.Heap.HeldPages().ToList();
        while (injected < 10_000 && attempts < 2_000_000 && failure is null)
        {
            attempts++;
            if (attempts % 2000 == 0) engine.Reprotect(coldOnly: false); // pages the readers wrote are covered again
            GuestPage p = heap[rng.Next(heap.Count)];
            (int offset, byte[] mask) = MemoryErrorInjector.Pattern((ErrorKind)rng.Next(4), g.Arena.Arena.PageSize, rng);
            // One error at a time, reported at once: never two in one parity group, which parity cannot rebuild.
            if (MemoryErrorInjector.IntoPage(g.Vm, p, offset, mask, onlyIfProtected: true) is not HostFrame f) continue;
            injected++;
            if (engine.Report(f).Outcome == ErrorOutcome.Contained) contained++;
        }
        stop.Cancel();
        foreach (Thread t in threads) t.Join();
        Assert.Null(failure);
        Assert.Equal(10_000, injected);
        Assert.Equal(0, contained);
        Assert.Equal(0, wrong);
        Assert.True(reads > 20, $"only {reads} reads ran beside the injections");
        Assert.True(gc.Collections > 10);
        Assert.Equal(0UL, g.Vm.Counters.Contained);
        foreach (SqliteConnection c in readers) g.Sqlite.Close(c);
    }

    [Fact]
    public void The_heap_allocates_only_over_pages_it_holds_and_is_one_per_process()
    {
        SkipUnsupported();
        using var arena = new TestArena(1024);
        GuestVm vm = arena.Vm("heap", 512);
        using var os = new GuestOperatingSystem(vm, new GuestOsOptions { SwapDirectory = _dir });
        using GuestHeap heap = GuestHeap.Create(os, "app", 8);
        Assert.Equal(504UL, heap.First.Value); // the highest free run
        Assert.All(heap.HeldPages(), p => Assert.False(os.IsFree(p)));
        Assert.Throws<InvalidOperationException>(() => GuestHeap.Create(os, "second", 8));
        Assert.Throws<InvalidOperationException>(() => os.Kill(heap.Process));

        nint big = PageLab.Native.Interop.PageLab.AppMalloc(3 * 4096); // larger than a page: contiguous in the run
        Assert.NotEqual(0, big);
        new Span<byte>((void*)big, 3 * 4096).Fill(0x5A); // real stores: demand faults resolved by the engine
        Assert.Equal(5, heap.Shrink(8));                   // the 3 pages of the block stay
        Assert.Equal(0, PageLab.Native.Interop.PageLab.AppMalloc(2 * 4096)); // no room in what it holds: NOMEM

        // Another process takes two of the pages given back; the heap gets only the other three.
        GuestProcess other = os.Spawn("other", 2);
        other.Page(0)[0] = 1;
        other.Page(1)[0] = 1;
        Assert.Equal(3, heap.Grow(8));
        Assert.Equal(6L, heap.Stats.HeldPages);
        nint again = PageLab.Native.Interop.PageLab.AppMalloc(2 * 4096);
        Assert.NotEqual(0, again);
        Assert.True(new Span<byte>((void*)big, 3 * 4096).IndexOfAnyExcept((byte)0x5A) < 0);
        PageLab.Native.Interop.PageLab.AppFree(big);
        PageLab.Native.Interop.PageLab.AppFree(again);
        Assert.Equal(0, heap.Stats.BytesInGuest);
    }
}
