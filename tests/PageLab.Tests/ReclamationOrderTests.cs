// ESX's reclamation order in a normal run (Scheduling/Reclamation.cs): page sharing first, the balloon next,
// host swap last, on real guest memory and real copy-on-write faults; the run summary's sharing figures
// against the engine's own frame table; balloon pages carrying the shareable value collapsing onto one frame;
// and scenario keys that are refused with the bad value named.
using System.Runtime.InteropServices;
using PageLab.Core;
using PageLab.Core.Balloon;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Scheduling;
using PageLab.Core.Sharing;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Tests;

public class ReclamationOrderTests
{
    private static string Example => Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "examples", "same-image.json"));

    // examples/same-image.json, shortened: three VMs booted from one image, one growing into the others' memory.
    private static Scenario SameImage(string reclamation, int ticks = 80)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows()) Assert.Skip("the fault engine runs on Linux and Windows");
        if (!File.Exists(Example)) Assert.Skip($"the repository's examples/ is not beside the tests ({Example})");
        // The policy the figures in docs/sharing.md were measured with (the default since is mrc).
        return Scenario.Load(Example) with { Reclamation = reclamation, Ticks = ticks, Policy = "pagelab" };
    }

    private sealed record Outcome(RunSummary Summary, List<RunEvent> Events, List<string> Problems);

    // Runs a scenario to its end, checking after every tick what the order promises: each VM's balloon target
    // is what it has beyond its ceiling less its part of the frames sharing saves (smoothed over a period, never
    // more than MemoryScheduler.SharingCreditJump or a twentieth away from the part measured now), and those
    // parts add up to at most the frames saved.
    private static Outcome Run(Scenario s)
    {
        using var runner = new ScenarioRunner(s);
        var events = new List<RunEvent>();
        runner.EventRaised += events.Add;
        RunTimeline timeline = RunTimeline.Attach(runner);
        runner.Boot();
        TickSnapshot last = null!;
        var problems = new List<string>();
        while (runner.Tick < s.Ticks)
        {
            last = runner.Advance();
            long saved = runner.Arena.Sharing.FramesSaved;
            ulong credits = 0;
            foreach (ScheduledVm v in runner.Scheduler.Vms)
            {
                credits += v.SharingCreditPages;
                ulong beyond = v.Vm.PageCount > v.CeilingPages ? v.Vm.PageCount - v.CeilingPages : 0;
                ulong want = v.Ballooning ? beyond - Math.Min(beyond, v.TargetSharingCreditPages) : 0;
                if (v.BalloonTargetPages != want) problems.Add($"tick {last.Tick} {v.Vm.Name}: balloon target {v.BalloonTargetPages}, expected {want}");
                long lag = Math.Abs((long)v.TargetSharingCreditPages - (long)v.SharingCreditPages);
                if (lag >= Math.Max(MemoryScheduler.SharingCreditJump, (long)v.TargetSharingCreditPages / 20))
                    problems.Add($"tick {last.Tick} {v.Vm.Name}: the target counts a credit of {v.TargetSharingCreditPages}, {lag} from the {v.SharingCreditPages} measured");
            }
            if ((long)credits > saved) problems.Add($"tick {last.Tick}: credits {credits} pass the {saved} frames saved");
        }
        problems.AddRange(runner.CheckAccounting());
        var summary = RunSummary.Of(timeline, last, runner.Arena, runner.CheckAccounting(), new RunTimings(0, 1, 0, 1),
            scanner: runner.Scheduler.Scanner?.Metrics);
        return new Outcome(summary, events, problems);
    }

    [Fact]
    public void With_sharing_first_the_same_image_run_saves_frames_and_its_balloons_take_less_than_without()
    {
        Outcome share = Run(SameImage("share,balloon,swap"));
        Outcome balloon = Run(SameImage("balloon,swap"));

        foreach (Outcome o in new[] { share, balloon })
        {
            Assert.True(o.Problems.Count == 0, string.Join("\n", o.Problems));
            Assert.All(o.Summary.Vms, v => Assert.Equal(0, v.ImageWrongReads)); // every image read, through merges and copies
        }
        SharingTotals sharing = share.Summary.Sharing!;
        Assert.Null(balloon.Summary.Sharing);
        // Three copies of a 768-page image: most of two of them are saved (writes and the idle VM's churn take some back).
        Assert.True(sharing.PeakFramesSaved >= 1000, $"peak saved {sharing.PeakFramesSaved}");
        Assert.True(sharing.CowBreaks > 0, "image writes broke no sharing");
        // The scanner ran once per step at the scenario's rate (a step per tick, and the boot's).
        Assert.True(sharing.ScanCpuSeconds > 0 && sharing.PagesScanned >= 80L * 256 && sharing.PagesScanned % 256 == 0, $"scanned {sharing.PagesScanned}");
        long tookWith = share.Summary.Vms.Sum(v => v.BalloonInflatedPages), tookWithout = balloon.Summary.Vms.Sum(v => v.BalloonInflatedPages);
        Assert.True(tookWith < tookWithout, $"balloons took {tookWith} pages with sharing, {tookWithout} without");
        ulong pagingWith = share.Summary.Vms.Aggregate(0UL, (n, v) => n + v.GuestPaging), pagingWithout = balloon.Summary.Vms.Aggregate(0UL, (n, v) => n + v.GuestPaging);
        Assert.True(pagingWith < pagingWithout, $"guest paging {pagingWith} with sharing, {pagingWithout} without");
    }

    [Fact]
    public void The_run_summarys_sharing_figures_are_the_engines_frame_table()
    {
        Scenario s = SameImage("share,balloon,swap", ticks: 40);
        using var runner = new ScenarioRunner(s);
        RunTimeline timeline = RunTimeline.Attach(runner);
        runner.Boot();
        TickSnapshot last = null!;
        while (runner.Tick < s.Ticks) last = runner.Advance();
        RunSummary summary = RunSummary.Of(timeline, last, runner.Arena, runner.CheckAccounting(), new RunTimings(0, 1, 0, 1),
            scanner: runner.Scheduler.Scanner!.Metrics);
        SharingTotals sharing = summary.Sharing!;

        // The engine's table, read frame by frame: every Shared frame and its sharers.
        long frames = 0, sharers = 0;
        for (uint f = 0; f < runner.Arena.FrameCount; f++)
        {
            if (runner.Arena.StateOf(new HostFrame(f)) != FrameState.Shared) continue;
            frames++;
            sharers += runner.Arena.SharersOf(new HostFrame(f));
        }
        Assert.True(summary.AccountingOk, string.Join("\n", summary.AccountingProblems));
        Assert.True(frames > 0);
        Assert.Equal(frames, sharing.SharedFramesEnd);
        Assert.Equal(sharers, sharing.SharingPagesEnd);
        Assert.Equal(sharers - frames, sharing.FramesSavedEnd);
        Assert.Equal(sharing.SharingPagesEnd, summary.Vms.Sum(v => v.SharedPagesEnd)); // every sharer is a page of a VM of the run
        // Each VM's credit is its shared pages times saved over sharing pages, rounded down: together at most the
        // frames saved and at least that less one per VM.
        long credits = summary.Vms.Sum(v => (long)v.SharingCreditPagesEnd);
        Assert.InRange(credits, sharing.FramesSavedEnd - summary.Vms.Count, sharing.FramesSavedEnd);
        Assert.Equal(sharing.CowBreaks, runner.Scheduler.Vms.Aggregate(0UL, (n, v) => n + v.Vm.Counters.CowBreaks));
        Assert.Equal(runner.Arena.Counts.Shared, last.Sharing.SharedFrames);
        // Round trip through the JSON the CLI writes.
        Assert.Equal(sharing, RunSummary.FromJson(summary.ToJson()).Sharing);
    }

    [Fact]
    public void Within_every_tick_sharing_comes_before_the_balloon_and_host_swap_only_after_a_balloon_without_progress()
    {
        Outcome o = Run(SameImage("share,balloon,swap"));
        Assert.True(o.Problems.Count == 0, string.Join("\n", o.Problems));
        Assert.Contains(o.Events, e => e.Kind == RunEventKind.Share);
        foreach (IGrouping<int, RunEvent> tick in o.Events.GroupBy(e => e.Tick))
        {
            List<RunEvent> es = tick.ToList();
            int lastShare = es.FindLastIndex(e => e.Kind == RunEventKind.Share);
            int firstInflate = es.FindIndex(e => e.Kind == RunEventKind.Inflate);
            int firstSwap = es.FindIndex(e => e.Kind == RunEventKind.HostSwap);
            int lastInflate = es.FindLastIndex(e => e.Kind == RunEventKind.Inflate);
            if (firstInflate >= 0) Assert.True(lastShare < firstInflate, $"tick {tick.Key}: a share event after the balloon inflated");
            if (firstSwap >= 0) Assert.True(lastInflate < firstSwap && lastShare < firstSwap, $"tick {tick.Key}: host swap before sharing or the balloon");
            foreach (RunEvent swap in es.Where(e => e.Kind == RunEventKind.HostSwap))
                Assert.DoesNotContain(es, e => e.Kind == RunEventKind.Inflate && e.Vm == swap.Vm && e.Frames > 0);
        }
    }

    [Fact]
    public void Host_swap_alone_reclaims_without_a_balloon_and_balloon_first_leaves_host_swap_to_the_stalled()
    {
        Outcome swap = Run(SameImage("swap"));
        Assert.True(swap.Problems.Count == 0, string.Join("\n", swap.Problems));
        Assert.DoesNotContain(swap.Events, e => e.Kind is RunEventKind.Inflate or RunEventKind.Share);
        Assert.Contains(swap.Events, e => e.Kind == RunEventKind.HostSwap && e.Frames > 0);
        Assert.All(swap.Summary.Vms, v => Assert.Equal(0, v.BalloonInflatedPages));
        Assert.Equal(swap.Events.Where(e => e.Kind == RunEventKind.HostSwap).Sum(e => e.Frames ?? 0), swap.Summary.Vms.Sum(v => v.HostSwappedByScheduler));
        Assert.All(swap.Summary.Vms, v => Assert.True(v.HostSwapOuts >= (ulong)v.HostSwappedByScheduler));
    }

    [Fact]
    public void Balloon_pages_carrying_the_shareable_value_collapse_onto_one_frame_per_value_and_the_guest_reads_them_back()
    {
        using var t = new TestArena(2048);
        GuestVm a = t.Vm("a", 512), b = t.Vm("b", 512);
        a.EnableSharing();
        b.EnableSharing();
        using var osA = new GuestOperatingSystem(a);
        using var osB = new GuestOperatingSystem(b);
        var appA = new BalloonApplication(osA, a.Id, shareableValue: true);
        var appB = new BalloonApplication(osB, b.Id, shareableValue: true);
        appA.SetTarget(100);
        appB.SetTarget(60);
        List<BalloonReport> reportsA = appA.Inflate(100), reportsB = appB.Inflate(60);
        Assert.Equal(100, reportsA.Count);

        var scanner = new PageScanner(t.Arena, [a, b]);
        scanner.ScanPass();

        // One frame per value: every balloon page of a on one frame, every one of b on another.
        HostFrame fa = a.Translate(reportsA[0].ClaimedPage)!.Value, fb = b.Translate(reportsB[0].ClaimedPage)!.Value;
        Assert.NotEqual(fa, fb);
        Assert.All(reportsA, r => Assert.Equal((GuestPageState.Shared, fa), (a.StateOf(r.ClaimedPage), a.Translate(r.ClaimedPage)!.Value)));
        Assert.All(reportsB, r => Assert.Equal(fb, b.Translate(r.ClaimedPage)!.Value));
        Assert.Equal((100L, 60L), (t.Arena.SharersOf(fa), t.Arena.SharersOf(fb)));
        Assert.Equal(158, t.Arena.Sharing.FramesSaved);
        // The guest reads back exactly what its balloon wrote; no frame holds anything else.
        Assert.All(reportsA, r => Assert.True(BalloonTag.MatchesShared(appA.Process.Page(r.Vpn), a.Id)));
        Assert.False(BalloonTag.MatchesShared(t.Arena.FrameBytes(fa), b.Id));

        // A guest write to one balloon page takes a copy; its report is then refused (the value is checked,
        // never trusted), the others are taken: their pages leave the shared frame, and no frame moves for them.
        MemoryMarshal.Cast<byte, ulong>(appA.Process.Page(reportsA[0].Vpn))[7] = 42;
        Assert.Equal(GuestPageState.Backed, a.StateOf(reportsA[0].ClaimedPage));
        var backend = new BalloonBackend(osA, appA);
        ReclaimResult r = backend.Reclaim(reportsA);
        Assert.Equal(1, r.Refused[RefusalReason.ValueMismatch]);
        Assert.Empty(r.Frames);                                            // the frames were given back when the pages merged
        Assert.Equal(99UL, backend.ActualPages);
        Assert.Equal(FrameState.Free, t.Arena.StateOf(fa));                 // the last sharer left: punched and freed
        Assert.Empty(FrameAccounting.Check(t.Arena, [a, b]));
    }

    [Fact]
    public void A_balloon_that_does_not_write_its_own_shareable_value_is_refused_and_nothing_moves()
    {
        using var t = new TestArena(1024);
        GuestVm a = t.Vm("a", 512), b = t.Vm("b", 512);
        using var os = new GuestOperatingSystem(a);
        var silent = new BalloonApplication(os, a.Id, BalloonBehaviour.NeverWritesValue, shareableValue: true);
        silent.SetTarget(16);
        List<BalloonReport> reports = silent.Inflate(16);
        ReclaimResult r = new BalloonBackend(os, silent).Reclaim(reports);
        Assert.Empty(r.Frames);
        Assert.Equal(16, r.Refused[RefusalReason.ValueMismatch]);

        // Another VM's value is not this VM's: a page filled with it is refused too.
        foreach (BalloonReport report in reports) BalloonTag.WriteShared(silent.Process.Page(report.Vpn), b.Id);
        r = new BalloonBackend(os, silent).Reclaim(reports);
        Assert.Empty(r.Frames);
        Assert.Equal(16, r.Refused[RefusalReason.ValueMismatch]);
        Assert.All(reports, x => Assert.Equal(GuestPageState.Backed, a.StateOf(x.ClaimedPage)));
    }

    [Fact]
    public void The_content_route_finds_shareable_balloon_pages_only_in_the_balloon_process()
    {
        using var t = new TestArena(1024);
        GuestVm a = t.Vm("a", 512);
        using var os = new GuestOperatingSystem(a);
        var app = new BalloonApplication(os, a.Id, shareableValue: true);
        GuestProcess other = os.Spawn("forger", 16);
        for (ulong v = 0; v < 16; v++) BalloonTag.WriteShared(other.Page(v), a.Id); // the value, outside the balloon
        app.SetTarget(32);
        Assert.Equal(32, app.Inflate(32).Count);
        ReclaimResult r = new BalloonBackend(os, app).ReclaimByContent(1000);
        Assert.Equal(32, r.Frames.Length);
        Assert.All(r.Frames, f => Assert.True(t.Arena.FrameBytes(f).IndexOfAnyExcept((byte)0) < 0)); // zeroed before they move
        for (ulong v = 0; v < 16; v++) Assert.True(BalloonTag.MatchesShared(other.Page(v), a.Id));
        t.Arena.Release(r.Frames);
    }

    [Theory]
    [InlineData("\"reclamation\": \"balloon,share\"", "reclamation", "'share' comes after 'balloon' in 'balloon,share'")]
    [InlineData("\"reclamation\": \"share,ballon\"", "reclamation", "'ballon' in 'share,ballon' is not share, balloon or swap")]
    [InlineData("\"reclamation\": \"swap,swap\"", "reclamation", "'swap' is given twice in 'swap,swap'")]
    [InlineData("\"reclamation\": \"\"", "reclamation", "'' names no mechanism")]
    [InlineData("\"reclamation\": \"share\"", "reclamation", "'share' shares, but no VM opted in")]
    [InlineData("\"scanPagesPerTick\": 0", "scanPagesPerTick", "got 0")]
    [InlineData("\"scanPagesPerTick\": 2000000", "scanPagesPerTick", "got 2000000")]
    public void Bad_reclamation_keys_are_refused_naming_the_value(string key, string where, string message)
    {
        string json = $$"""{ "hostPages": 1024, {{key}}, "vms": [ { "name": "a", "pages": 512, "workload": { "pages": 100 } } ] }""";
        var e = Assert.Throws<ScenarioException>(() => Scenario.Parse(json, "s.json"));
        Assert.Equal(where, e.Key);
        Assert.Contains(message, e.Message);
    }

    [Theory]
    [InlineData("\"image\": { \"name\": \"deb\", \"pages\": 300 }", "vms[0].image.pages", "half the VM's pages (256), got 300")]
    [InlineData("\"image\": { \"name\": \" \", \"pages\": 10 }", "vms[0].image.name", "must not be empty")]
    [InlineData("\"image\": { \"name\": \"deb\", \"pages\": 10, \"readsPerTick\": -1 }", "vms[0].image.readsPerTick", "got -1")]
    [InlineData("\"image\": { \"pages\": 10 }", "vms[0].image.name", "required, but missing")]
    [InlineData("\"sharing\": \"yes\"", "vms[0].sharing", "\"yes\" is not true or false")]
    public void Bad_sharing_and_image_keys_of_a_vm_are_refused_naming_the_value(string key, string where, string message)
    {
        string vm = key.StartsWith("\"sharing\"") ? key : $"\"sharing\": true, {key}";
        string json = $$"""{ "hostPages": 1024, "reclamation": "share,balloon", "vms": [ { "name": "a", "pages": 512, {{vm}}, "workload": { "pages": 100 } } ] }""";
        var e = Assert.Throws<ScenarioException>(() => Scenario.Parse(json, "s.json"));
        Assert.Equal(where, e.Key);
        Assert.Contains(message, e.Message);
    }
}
