// The `file` workload kind: a guest process reading and writing a real file through the guest's page cache
// (a sequential scan, Zipf-distributed random reads, or a read/write mix). The file is on the guest's virtual disk.
using PageLab.Core.GuestOs;
using PageLab.Lab.Scenarios;

namespace PageLab.Lab.Workloads;

public sealed record FileSettings
{
    /// <summary>The file's size in MiB (give this or filePages).</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public double? FileMiB { get; init; }
    /// <summary>The file's size in pages (give this or fileMiB).</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public ulong? FilePages { get; init; }
    /// <summary>sequential (a scan, over and over) | zipf (random reads) | mixed (random reads and writes)</summary>
    public string Pattern { get; init; } = "zipf";
    /// <summary>Reads and writes per tick, each of 8 bytes of one page.</summary>
    public int TouchesPerTick { get; init; } = 400;
    /// <summary>mixed: the share of touches that write (default 0.3).</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public double? WriteFraction { get; init; }
    /// <summary>zipf and mixed: the skew s over the file's pages (rank r with probability proportional to 1 / r^s; default 0.99).</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public double? ZipfSkew { get; init; }
}

public sealed class FileKind : WorkloadKind<FileSettings>
{
    public const double MaxFileMiB = 1024;
    public static readonly string[] Patterns = ["sequential", "zipf", "mixed"];

    public override string Name => "file";
    // fileMiB or filePages: one of them is required, which the check says (a file's Required keys are each required).

    /// <summary>The file's pages for these settings (after <see cref="Validate"/>).</summary>
    public static long PagesOf(FileSettings s, int pageSize) =>
        s.FilePages is ulong pages ? (long)pages : (long)Math.Ceiling(s.FileMiB!.Value * 1024 * 1024 / pageSize);

    protected override void Validate(FileSettings s, WorkloadContext c)
    {
        ulong maxPages = (ulong)(MaxFileMiB * 1024 * 1024 / Environment.SystemPageSize);
        if (s.FileMiB is null && s.FilePages is null) Fail("fileMiB", "a file workload needs its file's size: fileMiB or filePages");
        if (s.FileMiB is not null && s.FilePages is not null) Fail("filePages", $"give fileMiB or filePages, not both (got fileMiB {s.FileMiB} and filePages {s.FilePages})");
        if (s.FileMiB is double mib && (double.IsNaN(mib) || mib <= 0 || mib > MaxFileMiB)) Fail("fileMiB", $"must be in (0, {MaxFileMiB}], got {mib}");
        if (s.FilePages is ulong pages && (pages < 1 || pages > maxPages)) Fail("filePages", $"must be between 1 and {maxPages} ({MaxFileMiB} MiB), got {pages}");
        if (!Patterns.Contains(s.Pattern)) Fail("pattern", $"'{s.Pattern}' is not one of {string.Join(", ", Patterns)}");
        if (s.TouchesPerTick is < 0 or > Scenario.MaxTouchesPerTick) Fail("touchesPerTick", $"must be between 0 and {Scenario.MaxTouchesPerTick}, got {s.TouchesPerTick}");
        if (s.WriteFraction is double w)
        {
            if (s.Pattern != "mixed") Fail("writeFraction", $"only the mixed pattern writes; '{s.Pattern}' only reads (got writeFraction {w})");
            if (double.IsNaN(w) || w < 0 || w > 1) Fail("writeFraction", $"must be in [0, 1], got {w}");
        }
        if (s.ZipfSkew is double z)
        {
            if (s.Pattern == "sequential") Fail("zipfSkew", $"a sequential scan has no zipfSkew (got {z})");
            if (double.IsNaN(z) || z <= 0 || z > PhasesKind.MaxZipfExponent) Fail("zipfSkew", $"must be in (0, {PhasesKind.MaxZipfExponent}], got {z}");
        }
    }

    // Its process holds no anonymous pages of its own: its data is the file, in the page cache.
    protected override IWorkload Start(FileSettings s, GuestOperatingSystem os, WorkloadContext c) =>
        Create(s, os.Spawn(Name, 1), c);

    protected override IWorkload Create(FileSettings s, GuestProcess p, WorkloadContext c) => new FileWorkload(p, s);
}

/// <summary>Reads (and, mixed, writes) 8 bytes of one file page per touch through the page cache: a scan from page 0
/// to the end and again, or pages drawn by Zipf rank (rank 1 is page 0). The file's bytes are written at start by
/// real writes to the guest's disk (each 64-bit word a function of the page and the word).</summary>
public sealed class FileWorkload : IWorkload
{
    private readonly GuestProcess _process;
    private readonly FileSettings _settings;
    private readonly PageCache _cache;
    private readonly GuestFile _file;
    private readonly ZipfSampler? _zipf;
    private readonly double _writes;
    private long _next;
    private long _sink;

    public FileWorkload(GuestProcess process, FileSettings settings)
    {
        _process = process;
        _settings = settings;
        _cache = process.Os.PageCache;
        long pages = FileKind.PagesOf(settings, process.Os.Vm.Arena.PageSize);
        _file = _cache.CreateFile($"file-{process.Pid}", pages, (p, bytes) =>
        {
            Span<ulong> w = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(bytes);
            for (int k = 0; k < w.Length; k++) w[k] = Word(p, k);
        });
        _zipf = settings.Pattern == "sequential" ? null : new ZipfSampler((ulong)pages, settings.ZipfSkew ?? 0.99);
        _writes = settings.Pattern == "mixed" ? settings.WriteFraction ?? 0.3 : 0;
    }

    /// <summary>Word <paramref name="k"/> of page <paramref name="page"/> as the file was written.</summary>
    public static ulong Word(long page, int k) => ((ulong)page << 20 | (uint)k) * 0x9E3779B97F4A7C15UL ^ 0x66696C65UL;

    public GuestProcess Process => _process;
    public GuestFile File => _file;

    /// <summary>The file's pages: its data, all of which it keeps reading.</summary>
    public ulong WorkingSetPages(int tick) => (ulong)_file.Pages;

    public void Step(int tick, Random rng)
    {
        if (_process.Killed) return;
        int pageSize = _process.Os.Vm.Arena.PageSize;
        Span<byte> word = stackalloc byte[8];
        try
        {
            for (int n = 0; n < _settings.TouchesPerTick; n++)
            {
                long page = _zipf is null ? _next++ % _file.Pages : (long)_zipf.Sample(rng) - 1;
                int offset = rng.Next(pageSize / 8) * 8;
                if (_writes > 0 && rng.NextDouble() < _writes)
                {
                    BitConverter.TryWriteBytes(word, (ulong)tick);
                    _cache.Write(_process, _file, page, offset, word);
                }
                else
                {
                    _cache.Read(_process, _file, page, offset, word);
                    _sink += word[0];
                }
            }
        }
        catch (GuestProcessKilledException) { }
    }
}
