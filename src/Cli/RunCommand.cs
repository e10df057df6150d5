// `pagelab run [scenario.json]`: PageLab's main job. Runs a scenario (the built-in default when no file
// is given) with a live table of every VM's memory, then a summary and the frame-accounting check.
using System.CommandLine;
using System.Diagnostics;
using PageLab.Core.Scenarios;
using Spectre.Console;

namespace PageLab.Cli;

internal static class RunCommand
{
    public static Command Create()
    {
        var file = new Argument<FileInfo?>("scenario") { Description = "Scenario JSON file (default: the built-in scenario)", Arity = ArgumentArity.ZeroOrOne };
        var ticks = new Option<int?>("--ticks") { Description = "Override the scenario's tick count" };
        var staticPartition = new Option<bool>("--static") { Description = "Keep the initial allocations (no scheduler decisions), for comparison" };
        var compare = new Option<bool>("--compare") { Description = "Run the scenario twice, static and scheduled, and compare guest paging" };
        var print = new Option<bool>("--print-default") { Description = "Print the built-in scenario as JSON and exit" };
        var command = new Command("run", "Run a scenario: VMs, workloads, balloons and the cooperative memory scheduler.");
        command.Arguments.Add(file);
        command.Options.Add(ticks);
        command.Options.Add(staticPartition);
        command.Options.Add(compare);
        command.Options.Add(print);
        command.SetAction(parse => Program.Guarded(() =>
        {
            if (parse.GetValue(print))
            {
                Console.WriteLine(Scenario.Default.ToJson());
                return 0;
            }
            FileInfo? f = parse.GetValue(file);
            Scenario s = f is null ? Scenario.Default : Scenario.Load(f.FullName);
            if (parse.GetValue(ticks) is int t)
            {
                if (t < 1) return Program.Fail($"--ticks must be at least 1, got {t}");
                s = s with { Ticks = t };
            }
            if (parse.GetValue(compare))
            {
                Summary fixedRun = RunOne(s with { Adaptive = false }, live: false);
                Summary scheduled = RunOne(s with { Adaptive = true }, live: false);
                ShowComparison(fixedRun, scheduled);
                return fixedRun.AccountingOk && scheduled.AccountingOk ? 0 : 1;
            }
            Summary result = RunOne(s with { Adaptive = !parse.GetValue(staticPartition) && s.Adaptive }, live: !Console.IsOutputRedirected);
            return result.AccountingOk ? 0 : 1;
        }));
        return command;
    }

    private sealed record Summary(Scenario Scenario, TickSnapshot Last, TimeSpan Elapsed, bool AccountingOk);

    private static Summary RunOne(Scenario s, bool live)
    {
        AnsiConsole.MarkupLine($"[bold]{Markup.Escape(s.Name)}[/]: {s.Vms.Count} VMs, host {s.HostPages} pages, {s.Ticks} ticks, " +
                               $"{(s.Adaptive ? "scheduler on" : "static allocations")}, seed {s.Seed}");
        var clock = Stopwatch.StartNew();
        using var runner = new ScenarioRunner(s);
        runner.Boot();
        TickSnapshot last = new(0, runner.Snapshot(), runner.Arena.Counts.Free, 0, new(new Dictionary<string, int>(), new Dictionary<string, int>(), 0, 0));
        int every = Math.Max(1, s.Ticks / 20);
        if (live)
        {
            AnsiConsole.Live(Table(last, s)).Start(ctx =>
            {
                while (runner.Tick < s.Ticks)
                {
                    last = runner.Advance();
                    if (last.Tick % every == 0 || last.Tick == s.Ticks) ctx.UpdateTarget(Table(last, s));
                }
            });
        }
        else
        {
            while (runner.Tick < s.Ticks)
            {
                last = runner.Advance();
                if (last.Tick % (every * 5) == 0) Console.WriteLine($"  tick {last.Tick}/{s.Ticks}");
            }
            AnsiConsole.Write(Table(last, s));
        }
        List<string> problems = runner.CheckAccounting();
        clock.Stop();
        AnsiConsole.MarkupLine($"{last.TransferredFrames} frames moved between VMs by ballooning; " +
                               $"{clock.Elapsed.TotalSeconds:0.0} s.");
        if (problems.Count == 0) AnsiConsole.MarkupLine("[green]Frame accounting: every frame is free or owned by exactly one guest page or pool.[/]");
        else foreach (string p in problems) AnsiConsole.MarkupLine($"[red]Frame accounting: {Markup.Escape(p)}[/]");
        return new Summary(s, last, clock.Elapsed, problems.Count == 0);
    }

    private static Table Table(TickSnapshot t, Scenario s)
    {
        var table = new Table().Title($"tick {t.Tick}/{s.Ticks} · free host frames {t.FreeFrames} · moved {t.TransferredFrames}");
        foreach (string c in new[] { "VM", "alloc", "held", "balloon", "active est", "true WS", "guest free", "swap out", "swap in", "demand flt", "host stall", "bal. out", "condition", "avail" })
            table.AddColumn(new TableColumn(c).RightAligned());
        foreach (VmSnapshot v in t.Vms)
            table.AddRow(v.Name, $"{v.AllocationPages}", $"{v.HeldFrames}", $"{v.BalloonTarget}/{v.BalloonActual}", $"{v.ActiveEstimatePages}",
                $"{v.WorkingSetPages}", $"{v.FreePages}", $"{v.SwapOuts}", $"{v.SwapIns}", $"{v.DemandFaults}", $"{v.HostStalls}", $"{v.BalloonPageOuts}",
                $"{v.Condition}", $"{v.TrueAvailablePages}");
        return table;
    }

    private static void ShowComparison(Summary fixedRun, Summary scheduled)
    {
        var table = new Table().Title("guest paging: static allocations vs cooperative scheduler");
        table.AddColumns("VM", "swap-ins static", "swap-ins scheduled", "swap-outs static", "swap-outs scheduled", "alloc static", "alloc scheduled");
        foreach (VmSnapshot a in fixedRun.Last.Vms)
        {
            VmSnapshot b = scheduled.Last.Vms.First(v => v.Name == a.Name);
            table.AddRow(a.Name, $"{a.SwapIns}", $"{b.SwapIns}", $"{a.SwapOuts}", $"{b.SwapOuts}", $"{a.AllocationPages}", $"{b.AllocationPages}");
        }
        AnsiConsole.Write(table);
    }
}
