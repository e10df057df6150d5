// The `trace` workload kind: replays a recorded program's memory references (lackey text or page-epoch
// windows) onto a guest process's virtual pages, a tick's worth of the trace per tick, streamed from its file.
using PageLab.Core.GuestOs;
using PageLab.Lab.Workloads;

namespace PageLab.Lab.Workloads.Traces;

public sealed record TraceSettings
{
    /// <summary>The trace file (relative to the scenario file's directory).</summary>
    public string File { get; init; } = "";
    /// <summary>pet | lackey</summary>
    public string Format { get; init; } = "pet";
    /// <summary>lackey: references replayed per tick (default <see cref="TraceKind.DefaultReferencesPerTick"/>).</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public ulong? ReferencesPerTick { get; init; }
    /// <summary>pet: windows replayed per tick (default 1).</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public ulong? WindowsPerTick { get; init; }
    /// <summary>At the end, start again from the beginning (false: the process goes idle).</summary>
    public bool Loop { get; init; }
    /// <summary>More distinct pages than the process has: page n replays at n mod its pages (false: refused).</summary>
    public bool Wrap { get; init; }
    /// <summary>lackey: count instruction fetches as references (default true).</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public bool? Instructions { get; init; }
}

public sealed class TraceKind : WorkloadKind<TraceSettings>
{
    public const ulong DefaultReferencesPerTick = 100_000;
    public const ulong MaxReferencesPerTick = 1UL << 40, MaxWindowsPerTick = 1UL << 20;

    public override string Name => "trace";
    public override IReadOnlyList<(string Key, string Accepts)> Required => [("file", "a trace file: lackey text or .pet")];

    protected override void Validate(TraceSettings s, WorkloadContext c)
    {
        if (string.IsNullOrWhiteSpace(s.File)) Fail("file", "must name a trace file, got an empty string");
        if (s.Format is not ("pet" or "lackey")) Fail("format", $"'{s.Format}' is not pet or lackey");
        bool lackey = s.Format == "lackey";
        if (!lackey && s.ReferencesPerTick is not null) Fail("referencesPerTick", "is for lackey text; a pet file's ticks are windowsPerTick");
        if (lackey && s.WindowsPerTick is not null) Fail("windowsPerTick", "is for a pet file; lackey text's ticks are referencesPerTick");
        if (!lackey && s.Instructions is not null) Fail("instructions", "is for lackey text; a pet file's header says whether its windows count instruction fetches");
        if (s.ReferencesPerTick is ulong r && (r == 0 || r > MaxReferencesPerTick)) Fail("referencesPerTick", $"must be between 1 and {MaxReferencesPerTick}, got {r}");
        if (s.WindowsPerTick is ulong w && (w == 0 || w > MaxWindowsPerTick)) Fail("windowsPerTick", $"must be between 1 and {MaxWindowsPerTick}, got {w}");
        string file = c.PathOf(s.File);
        try
        {
            if (lackey)
            {
                using Stream _ = TraceFiles.OpenRead(file);               // its lines are read as the run goes
                return;
            }
            PageEpochHeader h = PageEpochHeader.Read(file);
            if (h.Windows == 0) Fail("file", $"{file} holds no references");
            if (h.DistinctPages > c.VmPages && !s.Wrap)
                Fail("file", $"{file} touches {h.DistinctPages} distinct pages, more than the VM's {c.VmPages}; give the VM more pages or \"wrap\": true");
        }
        catch (TraceFormatException e) { Fail("file", e.Message); }
    }

    protected override IWorkload Create(TraceSettings s, GuestProcess p, WorkloadContext c) => new TraceWorkload(p, s with { File = c.PathOf(s.File) }, c.SamplePeriodTicks);
}

/// <summary>Each tick: the pages the tick's part of the trace touched, each touched once in guest memory (a
/// store for a written page, a load for the others), at trace page n's virtual page n (mod the process's pages
/// when wrapping). Deterministic: it draws nothing from the run's random numbers.</summary>
public sealed class TraceWorkload : IWorkload, IDisposable
{
    private readonly GuestProcess _process;
    private readonly TraceSettings _settings;
    private readonly int _periodTicks;
    private readonly int _pages;
    private readonly PageNumbering _numbering = new();           // lackey: kept when the file starts again
    private readonly PageSet _set = new();
    private readonly List<int> _seen = new();                    // virtual pages ever touched
    private int[] _lastTick = new int[256];                      // per virtual page: the last tick it was touched (0: never)
    private LackeyReader? _lackey;
    private PageEpochReader? _pet;
    private bool _ended;
    private long _sink;

    public TraceWorkload(GuestProcess process, TraceSettings settings, int samplePeriodTicks)
    {
        _process = process;
        _settings = settings;
        _periodTicks = Math.Max(1, samplePeriodTicks);
        _pages = (int)Math.Min(process.VirtualPages, int.MaxValue);
        Open();
    }

    public GuestProcess Process => _process;
    /// <summary>The trace ended and does not loop: the process touches nothing more.</summary>
    public bool Ended => _ended;
    /// <summary>Times the trace ended and started again.</summary>
    public int Loops { get; private set; }

    /// <summary>The distinct pages it touched in the last sampling period's worth of ticks.</summary>
    public ulong WorkingSetPages(int tick)
    {
        ulong n = 0;
        foreach (int v in _seen)
            if (_lastTick[v] > tick - _periodTicks) n++;
        return n;
    }

    public void Step(int tick, Random rng)
    {
        if (_process.Killed || _ended) return;
        _set.Clear();
        if (!Read() && !(_settings.Loop && Restart() && Read()))
        {
            _ended = true;
            return;
        }
        try
        {
            foreach (int id in _set.Pages)
            {
                int vpn = id < _pages ? id : id % _pages;             // the readers refuse ids past the pages unless wrapping
                Span<byte> page = _process.Page((ulong)vpn);
                if (_set.Written(id)) page[0]++;
                else _sink += page[0];
                if (vpn >= _lastTick.Length) Array.Resize(ref _lastTick, Math.Max(vpn + 1, _lastTick.Length * 2));
                if (_lastTick[vpn] == 0) _seen.Add(vpn);
                _lastTick[vpn] = tick;
            }
        }
        catch (GuestProcessKilledException) { }
    }

    // One tick of the trace into _set; false at its end.
    private bool Read()
    {
        if (_lackey is not null)
        {
            return _lackey.ReadWindow(_set, (long)(_settings.ReferencesPerTick ?? TraceKind.DefaultReferencesPerTick)) > 0;
        }
        ulong windows = _settings.WindowsPerTick ?? 1, read = 0;
        while (read < windows && _pet!.ReadWindow(_set)) read++;
        return read > 0;
    }

    private bool Restart()
    {
        Close();
        Open();
        Loops++;
        return true;
    }

    private void Open()
    {
        if (_settings.Format == "lackey")
            _lackey = LackeyReader.Open(_settings.File, _numbering, _settings.Instructions ?? true, _pages, _settings.Wrap);
        else
        {
            _pet = PageEpochReader.Open(_settings.File);
            if (_pet.Header.DistinctPages > (ulong)_pages && !_settings.Wrap)
                throw new TraceFormatException($"{_settings.File}: touches {_pet.Header.DistinctPages} distinct pages, more than the process's {_pages}; give the VM more pages or \"wrap\": true");
        }
    }

    private void Close()
    {
        _lackey?.Dispose();
        _pet?.Dispose();
        (_lackey, _pet) = (null, null);
    }

    public void Dispose() => Close();
}
