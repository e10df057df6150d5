// The trace workload kind: Valgrind's own lackey output is read as Valgrind wrote it, the page-epoch conversion
// keeps every window's page set, a replay touches the same guest pages from either format, the same seed gives
// the same trace byte for byte, and every bad input is refused naming the file, the line or window and the value.
using System.Diagnostics;
using System.Text.RegularExpressions;
using PageLab.Core.GuestOs;
using PageLab.Lab.Workloads.Traces;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public partial class TraceWorkloadTests
{
    internal static string Examples(params string[] parts) =>
        Path.GetFullPath(Path.Combine([AppContext.BaseDirectory, "..", "..", "..", "..", "..", "examples", .. parts]));

    // examples/traces/tiny.lackey: Valgrind 3.19's lackey output for tiny.c (no C library): code on page 0x401,
    // 128 one-byte stores then 128 loads over the 16 pages 0x403..0x412 of a static array, 512 bytes apart.
    private static string Tiny()
    {
        string path = Examples("traces", "tiny.lackey");
        if (!File.Exists(path)) Assert.Skip($"the repository's examples/ is not beside the tests ({path})");
        return path;
    }

    [GeneratedRegex(@"^(I |\s[LSM]) ")]
    private static partial Regex ReferenceLine();

    [Fact]
    public void Valgrind_s_own_lackey_output_is_read_as_it_was_written()
    {
        string path = Tiny();
        string[] lines = File.ReadAllLines(path);
        long references = lines.Count(l => ReferenceLine().IsMatch(l));
        Assert.Contains(lines, l => l.StartsWith("==", StringComparison.Ordinal));   // Valgrind's header lines are in it

        var numbering = new PageNumbering();
        var set = new PageSet();
        using (var r = LackeyReader.Open(path, numbering))
        {
            Assert.Equal(references, r.ReadWindow(set, long.MaxValue));
            Assert.Equal(lines.Length, r.Line);
        }

        // Pages in first-seen order: the code page, then the array's 16 pages, each written; the code only read.
        Assert.Equal(17, set.Count);
        Assert.Equal(0, numbering.IdOf(0x401, out bool isNew));
        Assert.False(isNew);
        for (ulong p = 0x403; p <= 0x412; p++) Assert.Equal((int)(p - 0x402), numbering.IdOf(p, out _));
        Assert.False(set.Written(0));
        for (int id = 1; id <= 16; id++) Assert.True(set.Written(id), $"page id {id} was stored to");
    }

    [Fact]
    public void Without_instruction_fetches_only_the_data_references_count()
    {
        var set = new PageSet();
        using var r = LackeyReader.Open(Tiny(), new PageNumbering(), instructions: false);
        Assert.Equal(256, r.ReadWindow(set, long.MaxValue));     // 128 stores + 128 loads
        Assert.Equal(16, set.Count);
    }

    [Fact]
    public void An_access_that_spans_two_pages_touches_both_and_counts_once()
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "span.lackey");
        File.WriteAllText(path, "==1== header\n S 0000000ffe,4\n L 2000,8\r\n\nI  1ffc,4\n");
        var numbering = new PageNumbering();
        var set = new PageSet();
        using var r = LackeyReader.Open(path, numbering);
        Assert.Equal(3, r.ReadWindow(set, 10));
        Assert.Equal([0, 1, 2], set.Pages.ToArray());              // pages 0, 1 (the store spans them), 2
        Assert.True(set.Written(0) && set.Written(1));
        Assert.False(set.Written(2));
        Assert.Equal(1, numbering.IdOf(1, out _));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(100)]
    [InlineData(100_000)]
    public void A_converted_trace_holds_the_same_page_set_per_window_as_its_lackey_text(int window)
    {
        using var dir = new TempDir();
        string pet = Path.Combine(dir.Path, "t.pet");
        PageEpochHeader h = TraceConverter.ConvertFile(Tiny(), pet, window);

        List<(int, bool)[]> fromLackey = LackeyWindows(Tiny(), window);
        List<(int, bool)[]> fromPet = PetWindows(pet);
        Assert.Equal(fromLackey.Count, fromPet.Count);
        for (int i = 0; i < fromLackey.Count; i++) Assert.Equal(fromLackey[i], fromPet[i]);
        Assert.Equal((ulong)fromLackey.Count, h.Windows);
        Assert.Equal(17UL, h.DistinctPages);
        Assert.Equal((ulong)fromLackey.Sum(w => w.Length), h.PageTouches);
    }

    [Fact]
    public void A_trace_recorded_now_under_valgrind_converts_and_round_trips()
    {
        if (!OperatingSystem.IsLinux() || !File.Exists("/usr/bin/valgrind")) Assert.Skip("valgrind is not installed (apt-get install valgrind)");
        using var dir = new TempDir();
        string lackey = Path.Combine(dir.Path, "true.lackey"), pet = Path.Combine(dir.Path, "true.pet");
        using (var p = Process.Start(new ProcessStartInfo("valgrind", ["--tool=lackey", "--trace-mem=yes", $"--log-file={lackey}", "/bin/true"])
               { RedirectStandardError = true, RedirectStandardOutput = true })!)
        {
            Assert.True(p.WaitForExit(120_000), "valgrind /bin/true took over 2 minutes");
            Assert.Equal(0, p.ExitCode);
        }
        PageEpochHeader h = TraceConverter.ConvertFile(lackey, pet, 5000);
        Assert.True(h.References > 10_000, $"only {h.References} references from /bin/true");
        Assert.Equal(LackeyWindows(lackey, 5000), PetWindows(pet));
    }

    private static List<(int, bool)[]> LackeyWindows(string path, long window)
    {
        var windows = new List<(int, bool)[]>();
        var set = new PageSet();
        using var r = LackeyReader.Open(path, new PageNumbering());
        while (true)
        {
            set.Clear();
            if (r.ReadWindow(set, window) == 0) return windows;
            windows.Add(Sorted(set));
        }
    }

    private static List<(int, bool)[]> PetWindows(string path)
    {
        var windows = new List<(int, bool)[]>();
        var set = new PageSet();
        using var r = PageEpochReader.Open(path);
        while (true)
        {
            set.Clear();
            if (!r.ReadWindow(set)) return windows;
            windows.Add(Sorted(set));
        }
    }

    private static (int, bool)[] Sorted(PageSet set) => set.Pages.ToArray().Order().Select(id => (id, set.Written(id))).ToArray();

    // A VM replaying a trace on its own, on a host with room for it.
    internal static Scenario Replay(string file, string format, (string Key, System.Text.Json.Nodes.JsonNode Value)[] keys, int ticks = 12, int seed = 1)
    {
        var w = new WorkloadSpec { Kind = "trace" }.With("file", file).With("format", format);
        foreach ((string k, System.Text.Json.Nodes.JsonNode v) in keys) w = w.With(k, v);
        return new Scenario
        {
            Name = "replay", HostPages = 1200, Ticks = ticks, SamplePeriodTicks = 4, Seed = seed,
            Vms = [new VmSpec { Name = "t", Pages = 512, Workload = w }, new VmSpec { Name = "a", Pages = 512, Workload = new WorkloadSpec { Kind = "active", Pages = 300 } }],
        };
    }

    // Every page's first byte: a written page's counts the ticks that wrote it.
    private static byte[] FirstBytes(ScenarioRunner runner, int pages)
    {
        GuestProcess p = runner.Scheduler.Vms[0].Os.Processes.Single(x => x.Name == "trace");
        return Enumerable.Range(0, pages).Select(v => p.IsResident((ulong)v) || p.IsSwapped((ulong)v) ? p.Page((ulong)v)[0] : (byte)0xEE).ToArray();
    }

    [Fact]
    public void A_pet_file_replays_the_same_guest_pages_tick_by_tick_as_the_lackey_text_it_came_from()
    {
        using var dir = new TempDir();
        string pet = Path.Combine(dir.Path, "tiny.pet");
        TraceConverter.ConvertFile(Tiny(), pet, 50);
        byte[] a, b;
        int[] wsA, wsB;
        using (var runner = new ScenarioRunner(Replay(Tiny(), "lackey", [("referencesPerTick", 100)], ticks: 14)))
        {
            wsA = runner.Run().Select(t => (int)t.Vms[0].WorkingSetPages).ToArray();
            a = FirstBytes(runner, 17);
        }
        using (var runner = new ScenarioRunner(Replay(pet, "pet", [("windowsPerTick", 2)], ticks: 14)))
        {
            wsB = runner.Run().Select(t => (int)t.Vms[0].WorkingSetPages).ToArray();
            b = FirstBytes(runner, 17);
        }
        Assert.Equal(a, b);
        Assert.Equal(wsA, wsB);
        Assert.Equal(0, a[0]);                          // the code page is only read
        Assert.All(a[1..], x => Assert.InRange(x, (byte)1, (byte)14));     // each array page written in some ticks
        Assert.Contains(wsA, n => n > 1);
    }

    [Fact]
    public void A_looping_trace_starts_again_and_keeps_its_page_numbers()
    {
        byte[] once, looped;
        // 1,415 references at 100 per tick: the trace ends in tick 15; looping, ticks 16.. replay it again.
        using (var runner = new ScenarioRunner(Replay(Tiny(), "lackey", [("referencesPerTick", 100)], ticks: 30)))
        {
            foreach (TickSnapshot _ in runner.Run()) { }
            once = FirstBytes(runner, 17);
        }
        using (var runner = new ScenarioRunner(Replay(Tiny(), "lackey", [("referencesPerTick", 100), ("loop", true)], ticks: 30)))
        {
            foreach (TickSnapshot _ in runner.Run()) { }
            looped = FirstBytes(runner, 17);
        }
        for (int v = 1; v < 17; v++) Assert.Equal((byte)(once[v] * 2), looped[v]);
    }

    [Fact]
    public void The_same_seed_gives_a_byte_identical_trace_of_a_replay()
    {
        using var dir = new TempDir();
        string pet = Path.Combine(dir.Path, "tiny.pet");
        TraceConverter.ConvertFile(Tiny(), pet, 40);
        string a = Path.Combine(dir.Path, "a.jsonl"), b = Path.Combine(dir.Path, "b.jsonl");
        foreach (string output in new[] { a, b })
        {
            using var runner = new ScenarioRunner(Replay(pet, "pet", [("loop", true)], ticks: 60, seed: 5));
            using (new RunTraceWriter(runner, output))
                foreach (TickSnapshot _ in runner.Run()) { }
        }
        Assert.Equal(File.ReadAllBytes(a), File.ReadAllBytes(b));
        Assert.Contains("\"kind\":\"trace\"", File.ReadAllText(a));
    }

    private static ScenarioException Refused(Scenario s) => Assert.Throws<ScenarioException>(() => s.Validate("s.json"));

    [Fact]
    public void A_missing_trace_file_is_refused_before_the_run_naming_it()
    {
        string missing = Path.Combine(Path.GetTempPath(), $"pagelab-no-{Guid.NewGuid():N}.pet");
        ScenarioException e = Refused(Replay(missing, "pet", []));
        Assert.Equal($"s.json: vms[0].workload.file: {missing}: no such file", e.Message);
    }

    [Fact]
    public void A_lackey_file_given_as_pet_is_refused_saying_which_format_it_needs()
    {
        ScenarioException e = Refused(Replay(Tiny(), "pet", []));
        Assert.Contains("vms[0].workload.file: ", e.Message);
        Assert.Contains("not a page-epoch trace (it does not start with \"PLPET 1\"; a lackey text trace needs \"format\": \"lackey\")", e.Message);
    }

    [Theory]
    [InlineData("format", "\"perf\"", "vms[0].workload.format: 'perf' is not pet or lackey")]
    [InlineData("windowsPerTick", "0", "vms[0].workload.windowsPerTick: must be between 1 and 1048576, got 0")]
    [InlineData("referencesPerTick", "10", "vms[0].workload.referencesPerTick: is for lackey text; a pet file's ticks are windowsPerTick")]
    [InlineData("instructions", "false", "vms[0].workload.instructions: is for lackey text")]
    public void A_bad_trace_key_is_refused_naming_key_and_value(string key, string json, string expected)
    {
        using var dir = new TempDir();
        string pet = Path.Combine(dir.Path, "tiny.pet");
        TraceConverter.ConvertFile(Tiny(), pet, 40);
        string scenario = $$"""{ "hostPages": 1200, "vms": [ { "name": "t", "pages": 512, "workload": { "kind": "trace", "file": {{System.Text.Json.JsonSerializer.Serialize(pet)}}, "{{key}}": {{json}} } } ] }""";
        var e = Assert.Throws<ScenarioException>(() => Scenario.Parse(scenario, "s.json"));
        Assert.StartsWith($"s.json: {expected}", e.Message);
    }

    [Fact]
    public void A_pet_trace_with_more_pages_than_the_vm_is_refused_unless_it_wraps()
    {
        using var dir = new TempDir();
        string lackey = Path.Combine(dir.Path, "wide.lackey"), pet = Path.Combine(dir.Path, "wide.pet");
        File.WriteAllLines(lackey, Enumerable.Range(0, 600).Select(i => $" S {(ulong)i * 4096 + 0x10000:x},8"));
        TraceConverter.ConvertFile(lackey, pet, 100);

        ScenarioException e = Refused(Replay(pet, "pet", []));
        Assert.Equal($"s.json: vms[0].workload.file: {pet} touches 600 distinct pages, more than the VM's 512; give the VM more pages or \"wrap\": true", e.Message);

        using var runner = new ScenarioRunner(Replay(pet, "pet", [("wrap", true)], ticks: 6));
        foreach (TickSnapshot _ in runner.Run()) { }
        // Pages 512..599 wrapped onto 0..87: those were written twice (ticks 1 and 6), the others once.
        byte[] first = FirstBytes(runner, 512);
        Assert.Equal(2, first[0]);
        Assert.Equal(2, first[87]);
        Assert.Equal(1, first[88]);
    }

    [Fact]
    public void A_lackey_trace_past_the_process_s_pages_stops_the_run_naming_the_line()
    {
        using var dir = new TempDir();
        string lackey = Path.Combine(dir.Path, "wide.lackey");
        File.WriteAllLines(lackey, ["==7== Command: wide", .. Enumerable.Range(0, 600).Select(i => $" L {(ulong)i * 4096:x},4")]);
        using var runner = new ScenarioRunner(Replay(lackey, "lackey", [("referencesPerTick", 1000)], ticks: 2));
        runner.Boot();
        var e = Assert.Throws<TraceFormatException>(() => runner.Advance());
        Assert.Equal($"{lackey}: line 514: page 0x200 is the trace's distinct page number 513, more than the process's 512 virtual pages; give the VM more pages or \"wrap\": true", e.Message);
    }

    [Theory]
    [InlineData(" L 1000,8\n X 2000,8\n", "line 2: ' X 2000,8' is not a lackey line")]
    [InlineData(" L 1000,8\n L 2000\n", "line 2: ' L 2000' has no hex address followed by ','")]
    [InlineData(" L zz,8\n", "line 1: ' L zz,8' has no hex address followed by ','")]
    [InlineData(" S 1000,0\n", "line 1: ' S 1000,0' has size 0")]
    [InlineData(" S 1000,8 x\n", "line 1: ' S 1000,8 x' has no decimal size after the address (or text after it)")]
    [InlineData(" S 11112222333344445,8\n", "line 1: ' S 11112222333344445,8' has an address of more than 64 bits")]
    [InlineData("L1000,8\n", "line 1: 'L1000,8' has no space after its type")]
    public void A_bad_lackey_line_is_refused_naming_the_file_line_and_text(string text, string expected)
    {
        using var dir = new TempDir();
        string path = Path.Combine(dir.Path, "bad.lackey");
        File.WriteAllText(path, text);
        using var r = LackeyReader.Open(path, new PageNumbering());
        var e = Assert.Throws<TraceFormatException>(() => r.ReadWindow(new PageSet(), long.MaxValue));
        Assert.StartsWith($"{path}: {expected}", e.Message);
    }

    [Fact]
    public void A_damaged_pet_file_is_refused_naming_the_file_and_window()
    {
        using var dir = new TempDir();
        string pet = Path.Combine(dir.Path, "t.pet");
        TraceConverter.ConvertFile(Tiny(), pet, 40);
        byte[] whole = File.ReadAllBytes(pet);

        string cut = Path.Combine(dir.Path, "cut.pet");
        File.WriteAllBytes(cut, whole[..^3]);
        var e = Assert.Throws<TraceFormatException>(() => PetWindows(cut));
        Assert.Matches($@"^{Regex.Escape(cut)}: window \d+: ends inside the window \(the header promises \d+ windows\)$", e.Message);

        string unfinished = Path.Combine(dir.Path, "unfinished.pet");
        byte[] u = (byte[])whole.Clone();
        u.AsSpan(32, 8).Fill(0xFF);                                   // the window count a conversion writes last
        File.WriteAllBytes(unfinished, u);
        e = Assert.Throws<TraceFormatException>(() => PageEpochHeader.Read(unfinished));
        Assert.Equal($"{unfinished}: the conversion that wrote it did not finish (no window count in the header)", e.Message);

        string v2 = Path.Combine(dir.Path, "v2.pet");
        byte[] w = (byte[])whole.Clone();
        w[6] = (byte)'2';
        File.WriteAllBytes(v2, w);
        e = Assert.Throws<TraceFormatException>(() => PageEpochHeader.Read(v2));
        Assert.Equal($"{v2}: page-epoch version '2' is not one this PageLab reads (1)", e.Message);

        string extra = Path.Combine(dir.Path, "extra.pet");
        File.WriteAllBytes(extra, [.. whole, 0]);
        e = Assert.Throws<TraceFormatException>(() => PetWindows(extra));
        Assert.Contains("bytes after its last window", e.Message);
    }

    [Fact]
    public void The_example_traces_are_page_epoch_files_of_real_programs()
    {
        string dir = Examples("traces");
        if (!Directory.Exists(dir)) Assert.Skip($"the repository's examples/ is not beside the tests ({dir})");
        string[] pets = Directory.GetFiles(dir, "*.pet");
        Assert.NotEmpty(pets);
        foreach (string pet in pets)
        {
            PageEpochHeader h = PageEpochHeader.Read(pet);
            Assert.True(h.References > 100_000, $"{pet}: {h.References} references");
            Assert.True(new FileInfo(pet).Length < 2 << 20, $"{pet} is over 2 MB");
            Assert.Equal(h.Windows, (ulong)PetWindows(pet).Count);
        }
    }

    [Fact]
    public void Trace_convert_writes_a_pet_file_and_info_reads_its_header()
    {
        using var dir = new TempDir();
        string pet = Path.Combine(dir.Path, "tiny.pet");

        CliResult r = CliHarness.InProcess("trace", "convert", Tiny(), pet, "--window", "100");

        Assert.True(r.Exit == 0, r.Err);
        Assert.StartsWith($"{pet}: 1415 references (with instruction fetches) in 15 windows of 100, 17 distinct pages, ", r.Out);
        Assert.Equal(LackeyWindows(Tiny(), 100), PetWindows(pet));
        Assert.False(File.Exists(Path.Combine(dir.Path, ".tiny.pet.partial")));

        r = CliHarness.InProcess("trace", "info", pet);
        Assert.Equal(0, r.Exit);
        Assert.Equal($"{pet}: page-epoch version 1, pages of 4096 bytes, 1415 references (with instruction fetches), 15 windows of 100, 17 distinct pages, {PageEpochHeader.Read(pet).PageTouches} page touches", r.Out.Trim());

        r = CliHarness.InProcess("trace", "convert", Tiny(), pet, "--data-only");
        Assert.Equal(0, r.Exit);
        Assert.StartsWith($"{pet}: 256 references (without instruction fetches) in 1 windows of 100000, 16 distinct pages", r.Out);
    }

    [Fact]
    public void Trace_convert_refuses_bad_text_with_exit_2_and_leaves_no_output()
    {
        using var dir = new TempDir();
        string bad = Path.Combine(dir.Path, "bad.lackey"), pet = Path.Combine(dir.Path, "bad.pet");
        File.WriteAllText(bad, "==1== x\n L 1000,8\n Q 3000,8\n");

        CliResult r = CliHarness.InProcess("trace", "convert", bad, pet);

        Assert.Equal(2, r.Exit);
        Assert.Equal($"pagelab: error: {bad}: line 3: ' Q 3000,8' is not a lackey line (\"I  addr,size\", \" L|S|M addr,size\" or a \"==pid==\" line)", r.Err.Trim());
        Assert.Equal([bad], Directory.GetFiles(dir.Path));            // no output, no partial file

        // A run reads lackey text as it goes: the line is found at tick 3 (one reference a tick) and ends the run, exit 1.
        // The file name is relative to the scenario file.
        string scenario = Path.Combine(dir.Path, "bad.json");
        File.WriteAllText(scenario, """{ "hostPages": 1200, "ticks": 5, "vms": [ { "name": "t", "pages": 512, "workload": { "kind": "trace", "file": "bad.lackey", "format": "lackey", "referencesPerTick": 1 } } ] }""");
        r = CliHarness.InProcess("run", scenario, "--no-plot");
        Assert.Equal(1, r.Exit);
        Assert.EndsWith($"pagelab: error: {bad}: line 3: ' Q 3000,8' is not a lackey line (\"I  addr,size\", \" L|S|M addr,size\" or a \"==pid==\" line)", r.Err.Trim());
    }
}
