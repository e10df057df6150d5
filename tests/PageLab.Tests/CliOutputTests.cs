// What `pagelab run` prints and writes besides the trace: tables that fit COLUMNS (every column with
// --wide), the per-tick timeline as CSV (--csv), and scenario keys set on the command line (--set).
using PageLab.Lab.Campaigns;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class CliOutputTests
{
    private static readonly Dictionary<string, string> Columns80 = new() { ["COLUMNS"] = "80" };

    private static string ShortFile(TempDir dir, int ticks = 30)
    {
        string file = Path.Combine(dir.Path, "short.json");
        File.WriteAllText(file, RunOutputTests.Short(ticks: ticks).ToJson());
        return file;
    }

    private static CliResult Ok(CliResult r)
    {
        Assert.True(r.Exit == 0, $"exit {r.Exit}; stderr: {r.Err}");
        return r;
    }

    [Fact]
    public void At_80_columns_no_line_of_a_run_is_wider_than_80_and_the_summary_keeps_every_figure()
    {
        using var dir = new TempDir();
        string json = Path.Combine(dir.Path, "s.json");
        // The built-in scenario: three VMs, five-digit figures.
        CliResult r = Ok(CliHarness.Run(Columns80, dir.Path, 120, "run", "--ticks", "60", "--no-plot", "--json", json));

        string[] lines = r.Out.Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        Assert.All(lines, l => Assert.True(l.Length <= 80, $"{l.Length} characters: {l}"));
        RunSummary summary = RunSummary.FromJson(File.ReadAllText(json));
        string from = r.Out[r.Out.IndexOf("summary of", StringComparison.Ordinal)..];
        foreach (VmTotals v in summary.Vms)
        {
            // One block per VM: its name on a line, then every figure with its header.
            Assert.Contains($"\n{v.Name}\n", from);
            string block = from[(from.IndexOf($"\n{v.Name}\n", StringComparison.Ordinal) + v.Name.Length + 2)..];
            Assert.Contains($"page-ins {v.GuestPageIns}", block);
            Assert.Contains($"alloc range {v.AllocationMinPages}-{v.AllocationMaxPages}", block);
            Assert.Contains($"host stall {v.HostStalls}", block);
        }
    }

    [Fact]
    public void At_80_columns_a_run_that_shares_fits_and_says_what_sharing_saved_and_cost()
    {
        using var dir = new TempDir();
        string example = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "examples", "same-image.json"));
        if (!File.Exists(example)) Assert.Skip($"the repository's examples/ is not beside the tests ({example})");
        string json = Path.Combine(dir.Path, "s.json");
        CliResult r = Ok(CliHarness.Run(Columns80, dir.Path, 120, "run", example, "--ticks", "40", "--no-plot", "--json", json));

        string[] lines = r.Out.Split('\n').Select(l => l.TrimEnd('\r')).ToArray();
        Assert.All(lines, l => Assert.True(l.Length <= 80, $"{l.Length} characters: {l}"));
        RunSummary summary = RunSummary.FromJson(File.ReadAllText(json));
        SharingTotals sharing = summary.Sharing!;
        Assert.Equal("share,balloon,swap", summary.Reclamation);
        Assert.Contains($"sharing: {sharing.PagesScanned:N0} pages scanned", r.Out);
        Assert.Contains($"  {sharing.FramesSavedEnd:N0} frames saved: {sharing.SharingPagesEnd:N0} pages on {sharing.SharedFramesEnd:N0} shared frames;", r.Out);
        Assert.Contains($"  {sharing.CowBreaks:N0} copy-on-write breaks, {sharing.PagesMerged:N0} pages merged", r.Out);
        string from = r.Out[r.Out.IndexOf("summary of", StringComparison.Ordinal)..];
        foreach (VmTotals v in summary.Vms)
        {
            string block = from[(from.IndexOf($"\n{v.Name}\n", StringComparison.Ordinal) + v.Name.Length + 2)..];
            Assert.Contains($"balloon took {v.BalloonInflatedPages}", block);
            Assert.Contains($"host swap {v.HostSwapOuts}", block);
            Assert.Contains($"shared end {v.SharedPagesEnd}", block);
            Assert.Contains($"cow breaks {v.CowBreaks}", block);
            Assert.Contains("image errors 0", block);
        }
    }

    [Fact]
    public void Wide_prints_the_whole_summary_table_whatever_the_columns()
    {
        using var dir = new TempDir();
        CliResult r = Ok(CliHarness.Run(Columns80, dir.Path, 120, "run", ShortFile(dir), "--no-plot", "--wide"));

        string header = r.Out.Split('\n').First(l => l.Contains("alloc range"));
        foreach (string column in new[] { "frames in", "page-outs", "page-ins", "ticks low", "inj+rec" }) Assert.Contains(column, header);
        Assert.True(header.Length > 80, $"the wide table is {header.Length} characters");
    }

    [Fact]
    public void A_narrow_live_table_drops_columns_and_says_wide_shows_them()
    {
        using var dir = new TempDir();
        CliResult r = Ok(CliHarness.Run(Columns80, dir.Path, 120, "run", ShortFile(dir), "--no-plot"));

        Assert.Matches(@"\d+ more columns with --wide", r.Out);
        Assert.Contains("condition", r.Out);
    }

    [Fact]
    public void Csv_has_one_row_per_tick_per_vm_with_the_documented_columns_agreeing_with_the_summary()
    {
        using var dir = new TempDir();
        string csv = Path.Combine(dir.Path, "t.csv"), json = Path.Combine(dir.Path, "s.json");
        CliResult r = Ok(CliHarness.InProcess("run", ShortFile(dir, ticks: 25), "--no-plot", "--csv", csv, "--json", json));

        string[] rows = File.ReadAllLines(csv);
        Assert.Equal(string.Join(',', RunTimeline.CsvColumns), rows[0]);
        Assert.Equal("tick,vm,heldFrames,allocationPages,balloonTargetPages,balloonActualPages,activeEstimatePages,workingSetPages,guestPageOuts,guestPageIns,demandFaults,hostStalls,condition,freeArenaFrames,sharedPages,cowBreaks,sharingCreditPages,hostSwapOuts,sharedFrames,framesMoved,appTransactions,appHeapBytesInGuest,appCacheMisses,appShrinkEvents,appWrongResults,pageCachePages,pageCacheDroppedPages,pageCacheRefaults,dirtyWritebacks", rows[0]);
        RunSummary summary = RunSummary.FromJson(File.ReadAllText(json));
        Assert.Equal(26 * 2, rows.Length - 1); // ticks 0 to 25, two VMs
        string[][] cells = rows.Skip(1).Select(l => l.Split(',')).ToArray();
        Assert.All(cells, c => Assert.Equal(RunTimeline.CsvColumns.Length, c.Length));
        Assert.Equal(Enumerable.Range(0, 26).SelectMany(t => new[] { $"{t}", $"{t}" }), cells.Select(c => c[0]));
        foreach (VmTotals v in summary.Vms)
        {
            string[] last = cells.Last(c => c[1] == v.Name);
            Assert.Equal(("25", $"{v.HeldFramesEnd}", $"{v.AllocationEndPages}", $"{v.GuestPageOuts}", $"{v.GuestPageIns}", $"{v.HostStalls}", v.ConditionEnd.ToString().ToLowerInvariant()),
                (last[0], last[2], last[3], last[8], last[9], last[11], last[12]));
            Assert.Equal(v.AllocationMaxPages, cells.Where(c => c[1] == v.Name).Max(c => ulong.Parse(c[3])));
        }
    }

    [Fact]
    public void Every_csv_column_is_documented_in_its_order()
    {
        string docsPath = Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "docs", "run-summary.md"));
        if (!File.Exists(docsPath) && OperatingSystem.IsWindows()) Assert.Skip($"the repository's docs/ is not beside the published tests ({docsPath})");
        string[] documented = System.Text.RegularExpressions.Regex.Matches(File.ReadAllText(docsPath), @"^\| \d+ \| `(\w+)` \|", System.Text.RegularExpressions.RegexOptions.Multiline)
            .Select(m => m.Groups[1].Value).ToArray();
        Assert.Equal(RunTimeline.CsvColumns, documented);
    }

    [Fact]
    public void Compare_writes_one_timeline_csv_per_policy()
    {
        using var dir = new TempDir();
        string csv = Path.Combine(dir.Path, "t.csv");
        Ok(CliHarness.InProcess("run", ShortFile(dir, ticks: 10), "--no-plot", "--compare", "static,pagelab", "--csv", csv));
        foreach (string policy in new[] { "static", "pagelab" })
            Assert.Equal(1 + 11 * 2, File.ReadAllLines(Path.Combine(dir.Path, $"t-{policy}.csv")).Length);
        Assert.False(File.Exists(csv));
    }

    [Fact]
    public void A_csv_in_a_missing_directory_is_refused_before_the_run()
    {
        using var dir = new TempDir();
        string csv = Path.Combine(dir.Path, "nope", "t.csv");
        CliResult r = CliHarness.InProcess("run", "--no-plot", "--csv", csv);
        Assert.Equal(2, r.Exit);
        Assert.Contains($"--csv {csv}: the directory", r.Err);
        Assert.DoesNotContain("tick", r.Out);
    }

    [Fact]
    public void Set_changes_scenario_keys_by_dotted_path_before_the_run()
    {
        using var dir = new TempDir();
        string json = Path.Combine(dir.Path, "s.json");
        Ok(CliHarness.InProcess("run", ShortFile(dir), "--no-plot", "--json", json,
            "--set", "vms[1].shares=2000", "--set", "ticks=12", "--set", "idleTax=0.5", "--set", "name=renamed", "--set", "vms[0].workload.touchesPerTick=9"));

        RunSummary s = RunSummary.FromJson(File.ReadAllText(json));
        Assert.Equal(("renamed", 12, 12, 1000, 2000), (s.Scenario, s.Ticks, s.TicksRun, s.Vms[0].Shares, s.Vms[1].Shares));
    }

    [Fact]
    public void Set_applies_to_the_built_in_scenario_too()
    {
        using var dir = new TempDir();
        string json = Path.Combine(dir.Path, "s.json");
        Ok(CliHarness.InProcess("run", "--no-plot", "--json", json, "--set", "ticks=5", "--set", "injections=[]", "--set", "seed=42"));
        RunSummary s = RunSummary.FromJson(File.ReadAllText(json));
        Assert.Equal((5, 42), (s.TicksRun, s.Seed));
    }

    private static CliResult Refused(string[] args, params string[] expected)
    {
        CliResult r = CliHarness.InProcess(args);
        Assert.True(r.Exit == 2, $"exit {r.Exit} for `pagelab {string.Join(' ', args)}`; stderr: {r.Err}");
        Assert.InRange(r.ErrLines.Length, 1, 2);
        foreach (string e in expected) Assert.Contains(e, r.ErrLines[0]);
        foreach (string leak in CliHarness.DotNetLeaks) Assert.DoesNotContain(leak, r.Err);
        Assert.DoesNotContain("tick", r.Out);
        return r;
    }

    [Fact]
    public void A_set_without_an_equals_sign_says_key_value_is_expected() =>
        Refused(["run", "--set", "idleTax"], "--set 'idleTax': expected key=value");

    [Fact]
    public void A_set_with_a_malformed_key_path_says_how_paths_are_written() =>
        Refused(["run", "--set", "vms[x].shares=1"], "--set 'vms[x].shares=1': 'vms[x].shares' is not a key path", "vms[1].shares");

    [Fact]
    public void A_set_past_the_end_of_a_list_names_the_indexes() =>
        Refused(["run", "--set", "vms[7].shares=1"], "--set vms[7].shares=1: vms has 3 entries (indexes 0 to 2), no [7]");

    [Fact]
    public void A_set_value_out_of_range_names_the_key_the_value_and_the_range() =>
        Refused(["run", "--set", "idleTax=1.5"], "with --set idleTax=1.5: idleTax: must be in [0, 1), got 1.5");

    [Fact]
    public void A_set_value_of_the_wrong_type_names_the_key_and_value() =>
        Refused(["run", "--set", "vms[0].pages=lots"], "vms[0].pages:", "\"lots\" is not a whole number");

    [Fact]
    public void A_set_of_an_unknown_key_lists_the_known_ones() =>
        Refused(["run", "--set", "idletax=0.5"], "idletax: unknown key 'idletax'", "idleTax");

    [Fact]
    public void A_set_through_a_number_says_it_is_not_an_object() =>
        Refused(["run", "--set", "ticks.max=3"], "--set ticks.max=3: ticks is a number (300), not an object");

    [Fact]
    public void Set_ticks_and_the_ticks_option_together_are_refused() =>
        Refused(["run", "--ticks", "5", "--set", "ticks=6"], "--ticks and --set ticks=6 cannot be used together");

    [Fact]
    public void Set_with_print_default_is_refused() =>
        Refused(["run", "--print-default", "--set", "ticks=6"], "--print-default and --set cannot be used together");

    [Fact]
    public void Set_on_a_file_with_a_duplicate_key_still_says_where_the_duplicate_is()
    {
        using var dir = new TempDir();
        string file = Path.Combine(dir.Path, "dup.json");
        File.WriteAllText(file, """{ "hostPages": 100, "hostPages": 200, "vms": [] }""");
        Refused(["run", file, "--set", "ticks=5"], "hostPages: the key 'hostPages' is given twice");
    }

    [Fact]
    public void A_campaign_reports_progress_by_injections_says_gc_stress_is_on_and_prints_the_absolute_plot_path()
    {
        using var dir = new TempDir();
        CliResult r = Ok(CliHarness.Run(new Dictionary<string, string>(), dir.Path, 120, "campaign", "--injections", "640", "--gc-stress", "--plot", "c.png"));

        Assert.Contains("GC stress on", r.Out);
        int[] done = System.Text.RegularExpressions.Regex.Matches(r.Out, @"injection (\d+)/640 \((\d+)%\)").Select(m => int.Parse(m.Groups[2].Value)).ToArray();
        Assert.Equal([10, 20, 30, 40, 50, 60, 70, 80, 90, 100], done); // every 10 %, none skipped
        Assert.Contains($"plot: {Path.Combine(dir.Path, "c.png")} (", r.Out);
        Assert.True(new FileInfo(Path.Combine(dir.Path, "c.png")).Length > 1000);
        Assert.DoesNotContain("ReadMostlyPage", r.Out);
        Assert.Contains("injected into a read-mostly page", r.Out);
    }

    [Fact]
    public void Campaign_legends_and_rows_use_words_not_enum_names()
    {
        foreach (PageLab.Core.Recovery.ErrorOutcome o in Enum.GetValues<PageLab.Core.Recovery.ErrorOutcome>())
            Assert.Matches("^[a-z][a-z ()-]+$", PageLab.Report.CampaignPlot.Words(o));
        foreach (PageLab.Lab.Campaigns.CampaignTarget t in Enum.GetValues<PageLab.Lab.Campaigns.CampaignTarget>())
            Assert.Matches("^[a-z][a-z ()-]+$", PageLab.Report.CampaignPlot.Words(t));
    }

    [Fact]
    public void Only_json_writes_to_stdout() =>
        Refused(["run", "--no-plot", "--csv", "-"], "--csv -: only --json writes to stdout");

    [Fact]
    public void Validate_takes_set_as_run_does()
    {
        using var dir = new TempDir();
        CliResult ok = CliHarness.InProcess("validate", ShortFile(dir), "--set", "ticks=77");
        Assert.True(ok.Exit == 0, ok.Err);
        Assert.Contains("77 ticks", ok.Out);
        Refused(["validate", ShortFile(dir), "--set", "vms[0].shares=0"], "vms[0].shares: must be at least 1, got 0");
    }
}
