// The `phases` workload kind: a synthetic program of phases, each a pattern (uniform, zipf, scan) over a region
// of pages at a touch rate for a number of ticks, in order, once or in a loop.
using PageLab.Core.GuestOs;
using PageLab.Lab.Scenarios;

namespace PageLab.Lab.Workloads;

public sealed record PhaseSpec
{
    /// <summary>uniform | zipf | scan</summary>
    public string Pattern { get; init; } = "uniform";
    /// <summary>The region's size.</summary>
    public ulong Pages { get; init; }
    /// <summary>The region's first virtual page.</summary>
    public ulong FirstPage { get; init; }
    public int TouchesPerTick { get; init; } = 400;
    /// <summary>The phase's length.</summary>
    public int Ticks { get; init; }
    /// <summary>Touches that write; the others read.</summary>
    public double WriteFraction { get; init; } = 1;
    /// <summary>zipf: the skew s (rank r drawn with probability proportional to 1 / r^s; default 1).</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public double? ZipfExponent { get; init; }
}

public sealed record PhasesSettings
{
    public List<PhaseSpec> Phases { get; init; } = [];
    /// <summary>After the last phase, start again from the first (false: the process stops touching).</summary>
    public bool Loop { get; init; }
}

public sealed class PhasesKind : WorkloadKind<PhasesSettings>
{
    public const int MaxPhases = 1000;
    public const double MaxZipfExponent = 5;

    public override string Name => "phases";
    public override IReadOnlyList<(string Key, string Accepts)> Required => [("phases", "a list of phases: pattern, pages, touchesPerTick, ticks")];

    protected override void Validate(PhasesSettings s, WorkloadContext c)
    {
        if (s.Phases is null || s.Phases.Count == 0) Fail("phases", "needs at least one phase");
        if (s.Phases!.Count > MaxPhases) Fail("phases", $"{s.Phases.Count} phases, more than {MaxPhases}");
        for (int i = 0; i < s.Phases.Count; i++)
        {
            PhaseSpec p = s.Phases[i] ?? throw new WorkloadSpecException($"phases[{i}]", "must be a phase, not null");
            string at = $"phases[{i}]";
            if (p.Pattern is not ("uniform" or "zipf" or "scan")) Fail($"{at}.pattern", $"'{p.Pattern}' is not uniform, zipf or scan");
            if (p.FirstPage >= c.VmPages) Fail($"{at}.firstPage", $"must be between 0 and the VM's pages - 1 ({c.VmPages - 1}), got {p.FirstPage}");
            if (p.Pages == 0 || p.Pages > c.VmPages - p.FirstPage)
                Fail($"{at}.pages", $"must be between 1 and the VM's pages - firstPage ({c.VmPages - p.FirstPage}), got {p.Pages}");
            if (p.TouchesPerTick is < 0 or > Scenario.MaxTouchesPerTick)
                Fail($"{at}.touchesPerTick", $"must be between 0 and {Scenario.MaxTouchesPerTick}, got {p.TouchesPerTick}");
            if (p.Ticks < 1) Fail($"{at}.ticks", $"must be at least 1, got {p.Ticks}");
            if (p.WriteFraction is < 0 or > 1 || double.IsNaN(p.WriteFraction)) Fail($"{at}.writeFraction", $"must be in [0, 1], got {p.WriteFraction}");
            if (p.ZipfExponent is double z && p.Pattern != "zipf") Fail($"{at}.zipfExponent", $"only a zipf phase has zipfExponent, not '{p.Pattern}' (got {z})");
            if (p.ZipfExponent is double e && (e <= 0 || e > MaxZipfExponent || double.IsNaN(e)))
                Fail($"{at}.zipfExponent", $"must be in (0, {MaxZipfExponent}], got {e}");
        }
        if (s.Phases.Sum(p => (long)p.Ticks) > int.MaxValue) Fail("phases", "the phases' ticks total more than 2147483647");
    }

    protected override IWorkload Create(PhasesSettings s, GuestProcess p, WorkloadContext c) => new PhasesWorkload(p, s);
}

/// <summary>Runs phases in order; phase i covers ticks [start_i, start_i + ticks_i) of the program (tick 1 is its
/// first), so which phase a tick is in depends only on the tick. A scan starts at its region's first page each
/// time its phase begins.</summary>
public sealed class PhasesWorkload : IWorkload
{
    private readonly GuestProcess _process;
    private readonly PhasesSettings _settings;
    private readonly int _total;
    private readonly ZipfSampler?[] _zipf;
    private ulong _scan;
    private long _sink;

    public PhasesWorkload(GuestProcess process, PhasesSettings settings)
    {
        _process = process;
        _settings = settings;
        _total = settings.Phases.Sum(p => p.Ticks);
        _zipf = settings.Phases.Select(p => p.Pattern == "zipf" ? new ZipfSampler(p.Pages, p.ZipfExponent ?? 1) : null).ToArray();
    }

    public GuestProcess Process => _process;

    /// <summary>The phase tick <paramref name="tick"/> is in, or -1 after the last when not looping.</summary>
    public int PhaseAt(int tick)
    {
        int t = Math.Max(tick, 1) - 1;
        if (t >= _total)
        {
            if (!_settings.Loop) return -1;
            t %= _total;
        }
        for (int i = 0; i < _settings.Phases.Count; i++)
        {
            if (t < _settings.Phases[i].Ticks) return i;
            t -= _settings.Phases[i].Ticks;
        }
        return -1;
    }

    public ulong WorkingSetPages(int tick) => PhaseAt(tick) is int i and >= 0 ? _settings.Phases[i].Pages : 0;

    public void Step(int tick, Random rng)
    {
        if (_process.Killed) return;
        int i = PhaseAt(tick);
        if (i < 0) return;
        PhaseSpec p = _settings.Phases[i];
        if (tick <= 1 || PhaseAt(tick - 1) != i || (tick - 1) % _total == 0) _scan = 0;   // the phase begins
        int pageSize = _process.Os.Vm.Arena.PageSize;
        try
        {
            for (int n = 0; n < p.TouchesPerTick; n++)
            {
                ulong r = p.Pattern switch
                {
                    "scan" => _scan++ % p.Pages,
                    "zipf" => _zipf[i]!.Sample(rng) - 1,
                    _ => (ulong)rng.NextInt64((long)p.Pages),
                };
                Span<byte> page = _process.Page(p.FirstPage + r);
                bool write = p.WriteFraction >= 1 || (p.WriteFraction > 0 && rng.NextDouble() < p.WriteFraction);
                int offset = rng.Next(pageSize);
                if (write) page[offset]++;
                else _sink += page[offset];
            }
        }
        catch (GuestProcessKilledException) { }
    }
}

/// <summary>Draws ranks 1..n with probability proportional to 1 / rank^s in constant time and memory (rejection
/// inversion: Hörmann and Derflinger, "Rejection-inversion to generate variates from monotone discrete
/// distributions", 1996), so a zipf phase over millions of pages needs no table.</summary>
public sealed class ZipfSampler
{
    private readonly double _s, _hIntegralX1, _hIntegralN, _sThreshold;
    private readonly ulong _n;

    public ZipfSampler(ulong n, double exponent)
    {
        ArgumentOutOfRangeException.ThrowIfZero(n);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(exponent);
        _n = n;
        _s = exponent;
        _hIntegralX1 = HIntegral(1.5) - 1;
        _hIntegralN = HIntegral(n + 0.5);
        _sThreshold = 2 - HIntegralInverse(HIntegral(2.5) - H(2));
    }

    public ulong Sample(Random rng)
    {
        while (true)
        {
            double u = _hIntegralN + rng.NextDouble() * (_hIntegralX1 - _hIntegralN);
            double x = HIntegralInverse(u);
            double k = Math.Clamp(Math.Floor(x + 0.5), 1, _n);
            if (k - x <= _sThreshold || u >= HIntegral(k + 0.5) - H(k)) return (ulong)k;
        }
    }

    private double H(double x) => Math.Exp(-_s * Math.Log(x));
    private double HIntegral(double x)
    {
        double log = Math.Log(x);
        return Helper2((1 - _s) * log) * log;
    }
    private double HIntegralInverse(double x)
    {
        double t = Math.Max(x * (1 - _s), -1);
        return Math.Exp(Helper1(t) * x);
    }
    // log(1 + x) / x and (exp(x) - 1) / x, exact near 0.
    private static double Helper1(double x) => Math.Abs(x) > 1e-8 ? double.LogP1(x) / x : 1 - x * (0.5 - x * (1.0 / 3 - 0.25 * x));
    private static double Helper2(double x) => Math.Abs(x) > 1e-8 ? double.ExpM1(x) / x : 1 + x * 0.5 * (1 + x * (1.0 / 3) * (1 + 0.25 * x));
}
