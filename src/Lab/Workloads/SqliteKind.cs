// The `sqlite` workload kind: a real SQLite database whose heap is a pinned run of the VM's guest pages. Its keys
// are `pages` (the heap) and the `sqlite` object (the database and its load); the workload is SqliteWorkload.cs.
using System.Text.Json;
using PageLab.Core.Applications;
using PageLab.Core.GuestOs;
using PageLab.Lab.Scenarios;

namespace PageLab.Lab.Workloads;

/// <summary>The `sqlite` object of a sqlite workload: the database, its transaction mix, threads and how it adapts.</summary>
public sealed record SqliteSpec
{
    /// <summary>Rows of the database (its size): YCSB's records, TPC-B's accounts.</summary>
    public int Rows { get; init; } = 20_000;
    public int ValueBytes { get; init; } = 200;
    /// <summary>ycsb-a (50% reads, 50% updates) | ycsb-b (95/5) | ycsb-c (reads only) | tpcb</summary>
    public string Mix { get; init; } = "ycsb-b";
    /// <summary>Zipf skew of the keys (YCSB: 0.99).</summary>
    public double ZipfTheta { get; init; } = 0.99;
    public int Threads { get; init; } = 1;
    public int TransactionsPerTick { get; init; } = 200;
    /// <summary>fixed (cache never changes) | guest (adapts to the guest OS's free memory) | hypervisor
    /// (adapts to the memory condition the hypervisor reports)</summary>
    public string Adapt { get; init; } = "fixed";
    /// <summary>SQLite's page cache, in database pages, while memory is plenty.</summary>
    public int CachePages { get; init; } = 2000;

    public static readonly string[] Mixes = ["ycsb-a", "ycsb-b", "ycsb-c", "tpcb"];
    public static readonly string[] AdaptModes = ["fixed", "guest", "hypervisor"];
}

/// <summary>A sqlite workload's keys.</summary>
public sealed record SqliteSettings
{
    /// <summary>The application heap: a run of guest pages reserved for SQLite, pinned.</summary>
    public ulong Pages { get; init; }
    /// <summary>The database and its load (absent: the defaults).</summary>
    public SqliteSpec Sqlite { get; init; } = new();
}

public sealed class SqliteKind : WorkloadKind<SqliteSettings>
{
    public const string KindName = "sqlite";
    /// <summary>The smallest heap SQLite runs in (its schema, statements and a small cache).</summary>
    public const ulong MinHeapPages = 256;

    public override string Name => KindName;
    public override IReadOnlyList<(string Key, string Accepts)> Required =>
        [("pages", $"the SQLite heap: {MinHeapPages} to the VM's pages less its kernel, image and the guest's {Scenario.GuestReservePages} free pages")];

    /// <summary>A sqlite workload from C# (a test's or a benchmark's scenario).</summary>
    public static WorkloadSpec Workload(ulong pages, SqliteSpec? sqlite = null) =>
        new WorkloadSpec { Kind = KindName, Pages = pages }.With("sqlite", JsonSerializer.SerializeToNode(sqlite ?? new SqliteSpec(), WorkloadKinds.Json));

    // Its heap must fit beside the kernel, the image and the guest's free reserve; one per scenario (SQLite's
    // allocator is process-wide), and only where the allocator is verified.
    protected override void Validate(SqliteSettings s, WorkloadContext c)
    {
        if (SqliteAllocator.Unsupported is { } why) Fail("kind", $"sqlite: {why}");
        if (c.VmsOfThisKind > 1) Fail("kind", "only one VM per scenario may run sqlite (SQLite's allocator is process-wide)");
        ulong room = c.VmPages - Math.Min(c.VmPages, c.KernelPages + Scenario.GuestReservePages + c.ImagePages);
        if (s.Pages < MinHeapPages || s.Pages > room)
            Fail("pages", $"the SQLite heap needs between {MinHeapPages} and {room} pages (the VM's pages less its kernel, image and the guest's {Scenario.GuestReservePages} free pages), got {s.Pages}");
        SqliteSpec q = s.Sqlite ?? new SqliteSpec();
        if (q.Rows is < 1 or > 10_000_000) Fail("sqlite.rows", $"must be between 1 and 10000000, got {q.Rows}");
        if (q.ValueBytes is < 1 or > 65536) Fail("sqlite.valueBytes", $"must be between 1 and 65536, got {q.ValueBytes}");
        if (!SqliteSpec.Mixes.Contains(q.Mix)) Fail("sqlite.mix", $"'{q.Mix}' is not one of {string.Join(", ", SqliteSpec.Mixes)}");
        if (!SqliteSpec.AdaptModes.Contains(q.Adapt)) Fail("sqlite.adapt", $"'{q.Adapt}' is not one of {string.Join(", ", SqliteSpec.AdaptModes)}");
        if (q.ZipfTheta is <= 0 or >= 1 || double.IsNaN(q.ZipfTheta)) Fail("sqlite.zipfTheta", $"must be in (0, 1), got {q.ZipfTheta}");
        if (q.Threads is < 1 or > 16) Fail("sqlite.threads", $"must be between 1 and 16, got {q.Threads}");
        if (q.Threads > q.Rows) Fail("sqlite.threads", $"{q.Threads} threads for {q.Rows} rows: each thread owns its keys");
        if (q.TransactionsPerTick is < 0 or > 1_000_000) Fail("sqlite.transactionsPerTick", $"must be between 0 and 1000000, got {q.TransactionsPerTick}");
        if (q.CachePages is < 16 or > 10_000_000) Fail("sqlite.cachePages", $"must be between 16 and 10000000, got {q.CachePages}");
    }

    // Its process is the heap's pinned run of guest pages (GuestOperatingSystem.SpawnPinnedRun), which the heap
    // reserves itself, not a process spawned for it; its database goes in the run's temporary directory.
    protected override IWorkload Start(SqliteSettings s, GuestOperatingSystem os, WorkloadContext c) =>
        new SqliteWorkload(os, s.Pages, s.Sqlite ?? new SqliteSpec(), c.TempDirectory ?? Path.GetTempPath());

    protected override IWorkload Create(SqliteSettings s, GuestProcess p, WorkloadContext c) =>
        throw new NotSupportedException($"a sqlite workload runs in the pinned run of guest pages its heap reserves, not in a spawned process ('{p.Name}'); start it with {nameof(IWorkloadKind)}.{nameof(IWorkloadKind.Start)}");
}
