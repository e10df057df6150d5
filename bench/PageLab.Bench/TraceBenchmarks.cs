// Why: replaying real programs' traces must keep up with real traces (the goal: 5 million references per
// second converted and replayed on a 2-vCPU machine). Each benchmark states its references per invocation,
// so BenchmarkDotNet's mean is the time per reference; the baselines are the floors each path cannot beat.
using System.Reflection;
using BenchmarkDotNet.Attributes;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Lab.Workloads.Traces;

namespace PageLab.Bench;

internal static class TraceInputs
{
    /// <summary>Valgrind's lackey output for examples/traces/tiny.c (embedded): 1,415 references.</summary>
    public const int TinyReferences = 1415;
    /// <summary>Its reference lines repeated this many times make the conversion input (about 39 MB).</summary>
    public const int Repeats = 2000;
    public const int LackeyReferences = TinyReferences * Repeats;
    /// <summary>examples/traces/sort.pet (embedded): sort -n of 3,000 numbers, every instruction fetch and data access.</summary>
    public const int SortReferences = 11_744_438;

    public static byte[] Resource(string name)
    {
        using Stream s = Assembly.GetExecutingAssembly().GetManifestResourceStream(name)
                         ?? throw new InvalidOperationException($"resource {name} is not embedded in the benchmark assembly");
        var m = new MemoryStream();
        s.CopyTo(m);
        return m.ToArray();
    }

    /// <summary>The genuine lackey text, its reference lines repeated (Valgrind's header once, at the top).</summary>
    public static byte[] RepeatedLackey()
    {
        string[] lines = System.Text.Encoding.ASCII.GetString(Resource("tiny.lackey")).Split('\n');
        string header = string.Join('\n', lines.Where(l => l.StartsWith("==", StringComparison.Ordinal))) + "\n";
        string body = string.Join('\n', lines.Where(l => l.Length > 0 && !l.StartsWith("==", StringComparison.Ordinal))) + "\n";
        var text = new System.Text.StringBuilder(header, header.Length + body.Length * Repeats);
        for (int i = 0; i < Repeats; i++) text.Append(body);
        return System.Text.Encoding.ASCII.GetBytes(text.ToString());
    }
}

[MemoryDiagnoser]
[MedianColumn]
public class TraceConversionBenchmarks
{
    private byte[] _lackey = null!;
    private readonly MemoryStream _pet = new();

    [GlobalSetup]
    public void Setup()
    {
        _lackey = TraceInputs.RepeatedLackey();
        var set = new PageSet();
        using var r = new LackeyReader(new MemoryStream(_lackey), "tiny.lackey x2000", new PageNumbering());
        long n = r.ReadWindow(set, long.MaxValue);
        if (n != TraceInputs.LackeyReferences) throw new InvalidOperationException($"the input holds {n} references, not {TraceInputs.LackeyReferences}");
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = TraceInputs.LackeyReferences, Description = "floor: find the line ends of the same text")]
    public int LineEnds() => _lackey.AsSpan().Count((byte)'\n');

    [Benchmark(OperationsPerInvoke = TraceInputs.LackeyReferences, Description = "lackey text -> page sets (parse, number, 10,000-reference windows)")]
    public long PageSets()
    {
        var set = new PageSet();
        long n = 0;
        using var r = new LackeyReader(new MemoryStream(_lackey), "lackey", new PageNumbering());
        while (true)
        {
            set.Clear();
            long got = r.ReadWindow(set, 10_000);
            if (got == 0) return n;
            n += got;
        }
    }

    [Benchmark(OperationsPerInvoke = TraceInputs.LackeyReferences, Description = "lackey text -> .pet (trace convert, window 10,000)")]
    public ulong Convert()
    {
        _pet.SetLength(0);
        return TraceConverter.Convert(new MemoryStream(_lackey), "lackey", new NonClosing(_pet), 10_000).References;
    }

    // The converter disposes its output; the benchmark reuses one buffer.
    private sealed class NonClosing(Stream inner) : Stream
    {
        public override bool CanRead => false;
        public override bool CanSeek => true;
        public override bool CanWrite => true;
        public override long Length => inner.Length;
        public override long Position { get => inner.Position; set => inner.Position = value; }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => inner.Seek(offset, origin);
        public override void SetLength(long value) => inner.SetLength(value);
        public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);
    }
}

[MemoryDiagnoser]
[MedianColumn]
public class TraceReplayBenchmarks
{
    private const ulong VmPages = 1024;
    private string _dir = null!, _pet = null!, _lackey = null!;
    private HostArena _arena = null!;
    private GuestVm _vm = null!;
    private GuestOperatingSystem _os = null!;
    private GuestProcess _process = null!;
    private int[][] _ticks = null!;               // the pet file's page sets, one tick (100 windows) each, decoded
    private bool[][] _written = null!;

    [GlobalSetup]
    public void Setup()
    {
        _dir = Directory.CreateTempSubdirectory("pagelab-bench-trace").FullName;
        _pet = Path.Combine(_dir, "sort.pet");
        File.WriteAllBytes(_pet, TraceInputs.Resource("sort.pet"));
        if (PageEpochHeader.Read(_pet).References != TraceInputs.SortReferences)
            throw new InvalidOperationException($"sort.pet holds {PageEpochHeader.Read(_pet).References} references, not {TraceInputs.SortReferences}");
        _lackey = Path.Combine(_dir, "tiny.lackey");
        File.WriteAllBytes(_lackey, TraceInputs.RepeatedLackey());
        _arena = HostArena.Create((uint)VmPages + 64, "pagelab-bench-trace");
        _vm = GuestVm.Create(_arena, "trace", VmPages, poolCapacity: 1);
        _vm.Back(new PageLab.Core.GuestPage(0), VmPages);
        _os = new GuestOperatingSystem(_vm, new GuestOsOptions { SwapDirectory = _dir });
        _process = _os.Spawn("trace", VmPages);

        var ticks = new List<int[]>();
        var written = new List<bool[]>();
        using var r = PageEpochReader.Open(_pet);
        var set = new PageSet();
        for (bool more = true; more;)
        {
            set.Clear();
            for (int w = 0; w < 100 && (more = r.ReadWindow(set)); w++) { }
            if (set.Count == 0) break;
            ticks.Add(set.Pages.ToArray());
            written.Add(set.Pages.ToArray().Select(set.Written).ToArray());
        }
        (_ticks, _written) = (ticks.ToArray(), written.ToArray());
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _os.Dispose();
        _vm.Dispose();
        _arena.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private long _sink;

    [Benchmark(Baseline = true, OperationsPerInvoke = TraceInputs.SortReferences, Description = "floor: the same page touches, already decoded")]
    public long Touches()
    {
        for (int t = 0; t < _ticks.Length; t++)
            for (int i = 0; i < _ticks[t].Length; i++)
            {
                Span<byte> page = _process.Page((ulong)_ticks[t][i]);
                if (_written[t][i]) page[0]++;
                else _sink += page[0];
            }
        return _sink;
    }

    [Benchmark(OperationsPerInvoke = TraceInputs.SortReferences, Description = "replay sort.pet in a guest (100 windows per tick)")]
    public int ReplayPet() => Replay(new TraceSettings { File = _pet, Format = "pet", WindowsPerTick = 100 });

    [Benchmark(OperationsPerInvoke = TraceInputs.LackeyReferences, Description = "replay lackey text in a guest (100,000 references per tick)")]
    public int ReplayLackey() => Replay(new TraceSettings { File = _lackey, Format = "lackey", ReferencesPerTick = 100_000 });

    private int Replay(TraceSettings settings)
    {
        using var w = new TraceWorkload(_process, settings, samplePeriodTicks: 10);
        int tick = 0;
        while (!w.Ended) w.Step(++tick, null!);
        return tick;
    }
}
