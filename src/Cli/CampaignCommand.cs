// `pagelab campaign` and `pagelab inject`: memory errors injected into a VM whose guests keep running,
// with recovered / contained / lost counts and latency percentiles; one error's setup is Lab's InjectDemo.
using System.CommandLine;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core.Recovery;
using Spectre.Console;
using PageLab.Lab.Campaigns;
using PageLab.Lab.Demos;

namespace PageLab.Cli;

internal static class CampaignCommand
{
    /// <summary>Most errors one campaign injects: each takes a frame of the campaign's arena (4 GiB at this count).</summary>
    internal const int MaxInjections = 1_000_000;

    /// <summary>`--via`: protection (the engine poisons the page and is told at once) or kernel (the kernel
    /// poisons the page, nobody is told, and the guest's access takes the SIGBUS).</summary>
    private static Option<string> Via(string what) => CliOptions.Choice("--via",
        $"How {what} made: protection (page protection and a report to the engine) or kernel (a kernel poison marker; the guest's access takes the SIGBUS; Linux 6.6+)",
        ["protection", "kernel"], "protection");

    private static InjectionPath PathOf(string via)
    {
        if (via != "kernel") return InjectionPath.Protection;
        if (!OperatingSystem.IsLinux()) throw new UsageException($"--via kernel: {KernelErrorInjector.WindowsReason}");
        if (KernelErrorInjector.Available.Unavailable is string why) throw new UsageException($"--via kernel: no kernel injector here: {why}");
        return InjectionPath.Kernel;
    }

    public static Command Create()
    {
        var injections = CliOptions.Int("--injections", "Errors to inject", 1, MaxInjections, 20_000);
        var seed = CliOptions.Int("--seed", "Seed of the campaign", int.MinValue, int.MaxValue, 1);
        var k = CliOptions.Int("--group-size", "Pages per parity group", 2, 32, 8);
        var gc = new Option<bool>("--gc-stress") { Description = "Run a thread that forces full GCs meanwhile" };
        var plot = CliOptions.File("--plot", "Where to write the campaign's PNG (default: artifacts/pagelab-campaign.png)");
        var noPlot = new Option<bool>("--no-plot") { Description = "Do not write a PNG" };
        var via = Via("errors are");
        var command = new Command("campaign", "Inject many memory errors of every kind while guest threads run; print what was recovered, contained or lost.");
        command.Options.Add(injections);
        command.Options.Add(seed);
        command.Options.Add(k);
        command.Options.Add(gc);
        command.Options.Add(plot);
        command.Options.Add(noPlot);
        command.Options.Add(via);
        command.SetAction(parse => Program.Guarded(() =>
        {
            var options = new CampaignOptions
            {
                Injections = parse.GetValue(injections), Seed = parse.GetValue(seed), GroupSize = parse.GetValue(k), GcStress = parse.GetValue(gc),
                Via = PathOf(parse.GetValue(via)!),
            };
            options.Validate();
            CliOptions.Conflict(parse, plot, noPlot, "give one");
            string? plotPath = parse.GetValue(noPlot) ? null : Path.GetFullPath(parse.GetValue(plot) ?? Path.Combine("artifacts", "pagelab-campaign.png"));
            if (plotPath is not null)
            {
                if (!CliOptions.Given(parse, plot)) Directory.CreateDirectory(Path.GetDirectoryName(plotPath)!);
                OutputPaths.CheckWritable("--plot", plotPath);
            }
            using var interrupts = new Interrupts("stopping after the injections in progress");
            using OutputLocks locks = OutputLocks.Take(("--plot", plotPath));
            // A second signal exits at once: the plot's partial file and the campaign's disk file must not stay.
            using IDisposable removeUnwritten = interrupts.AtExitNow(locks.RemoveUnwritten);
            using IDisposable removeDisk = interrupts.AtExitNow(RemoveCampaignFiles);
            // A first signal stops the campaign between injections; it then makes its end-of-campaign checks on
            // the errors injected so far and returns them, reported below like a whole campaign's.
            CancellationToken stopEarly = interrupts.Stopping;
            AnsiConsole.MarkupLine($"campaign: [bold]{options.Injections}[/] errors into a running guest, seed {options.Seed}, parity groups of {options.GroupSize} pages");
            if (options.GcStress) AnsiConsole.MarkupLine("[yellow]GC stress on[/]: a thread forces full garbage collections throughout");
            CampaignResult r;
            if (Console.IsOutputRedirected)
            {
                // A line per 10 % of the injections, as `run` does per 10 % of its ticks.
                var progress = new RunProgress(options.Injections, "injection");
                r = RecoveryCampaign.Run(options, new Synchronous(n =>
                {
                    if (n > 0 && progress.Due(n)) Console.WriteLine($"  {progress.Caption(n)}");
                }), stopEarly);
            }
            else
            {
                CampaignResult? shown = null;
                AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    ProgressTask task = ctx.AddTask("injecting", maxValue: options.Injections);
                    // Reported every 64 injections on the campaign's own thread, so the bar moves evenly.
                    shown = RecoveryCampaign.Run(options, new Synchronous(n => task.Value = n), stopEarly);
                    task.Value = shown.Injected;
                });
                r = shown!;
            }
            if (r.Stopped)
            {
                // The counts and checks below are whole for the errors injected: the campaign made its final
                // shadow check at the stop. No plot: a campaign's plot shows a whole run.
                Console.Error.WriteLine($"pagelab: interrupted after {r.Injected} of {options.Injections} injections ({interrupts.Signal}); " +
                                        "the report covers those, checked at the stop; no plot written");
            }
            string by = options.Via == InjectionPath.Kernel ? $", delivered by the kernel ({KernelErrorInjector.Available.Preferred})" : "";
            string what = r.Stopped ? $"stopped after {r.Injected} of {options.Injections} errors" : $"{r.Injected} errors";
            var table = new Table().Title($"campaign: {what}{by}, seed {options.Seed}, k = {options.GroupSize}, {r.Elapsed.TotalSeconds:0.0} s");
            table.AddColumns("", "count");
            table.AddRow("recovered (pages, parity frames, free frames)", $"{r.Recovered}");
            table.AddRow("contained (unprotected page: its context terminated)", $"{r.Contained}");
            table.AddRow("lost", $"{r.Lost}");
            table.AddRow("silent corruptions found by the scrubber", $"{r.SilentFound}");
            table.AddRow("recovered inside the fault handler on a guest access", $"{r.HandlerRecoveries}");
            table.AddRow("write faults on covered pages", $"{r.TrackedWrites}");
            table.AddRow("guest reads checked / mismatches", $"{r.ReaderChecks} / {r.ReaderMismatches}");
            table.AddRow("frames retired", $"{r.Retired}");
            table.AddRow(options.Via == InjectionPath.Kernel ? "guest access -> resolved latency p50 / p90 / p99" : "report -> handled latency p50 / p90 / p99",
                $"{r.P50Micros:0.0} / {r.P90Micros:0.0} / {r.P99Micros:0.0} µs");
            foreach ((CampaignTarget t, long n) in r.Targets.OrderBy(kv => kv.Key)) table.AddRow($"  injected into a {PageLab.Report.CampaignPlot.Words(t)}", $"{n}");
            Terminal.Write(table);
            foreach (string p in r.Problems) AnsiConsole.MarkupLine($"[red]{Markup.Escape(p)}[/]");
            bool whole = r.Lost == 0 && r.Problems.Count == 0 && r.ReaderMismatches == 0;
            if (r.Stopped) return whole ? interrupts.ExitCode : ExitCodes.Failed;
            if (plotPath is not null)
            {
                PageLab.Report.PlotImage image = PageLab.Report.CampaignPlot.SavePng(r, locks.Partial(plotPath));
                locks.Commit(plotPath);
                AnsiConsole.MarkupLine($"plot: [bold]{Markup.Escape(plotPath)}[/] ({image.WidthPx}x{image.HeightPx} px)");
            }
            return whole ? 0 : ExitCodes.Failed;
        }));
        return command;
    }

    public static Command CreateInject()
    {
        var kind = CliOptions.Enum("--kind", "The error pattern", ErrorKind.MultiBit);
        var target = CliOptions.Choice("--target", "Where the error hits", InjectDemo.Targets, "parity-page");
        var seed = CliOptions.Int("--seed", "Seed of the error pattern", int.MinValue, int.MaxValue, 1);
        var via = Via("the error is");
        var command = new Command("inject", "Inject one memory error into a small protected VM and show how it is handled.");
        command.Options.Add(kind);
        command.Options.Add(target);
        command.Options.Add(seed);
        command.Options.Add(via);
        command.SetAction(parse => Program.Guarded(() =>
        {
            string where = parse.GetValue(target)!;
            InjectionPath injection = PathOf(parse.GetValue(via)!);
            if (injection == InjectionPath.Kernel && where is "parity-frame" or "free-frame")
                throw new UsageException($"--via kernel --target {where}: the kernel poisons a guest mapping; choose parity-page, disk-page or unprotected-page");
            InjectResult r = InjectDemo.Run(parse.GetValue(kind), where, parse.GetValue(seed), injection);
            string error = $"{r.Kind} error ({r.MaskBytes} mask bytes at offset {r.Offset}) in {where} {r.Frame}";
            if (r.ViaKernel)
            {
                bool lost = r.Outcome == ErrorOutcome.Contained;
                AnsiConsole.MarkupLine($"{error} (guest {r.Page}) " +
                                       $"behind a kernel poison marker ({KernelErrorInjector.Available.Preferred}); the engine was not told (page still {r.StateBefore})");
                AnsiConsole.MarkupLine($"guest read: SIGBUS ({r.Resolved} resolved in the handler), read {r.FirstRead}; " +
                                       $"outcome: [bold]{r.Outcome}[/] in {r.Latency.TotalMicroseconds:0.0} µs; " +
                                       $"{(lost ? (r.Intact ? "page reads zeros (contained), context ended" : "[red]page shows bad bytes[/]") : (r.Intact ? "content bit-exact" : "[red]content differs[/]"))}; " +
                                       $"frame now {r.FrameNow}");
                return r.Passed ? 0 : 1;
            }
            AnsiConsole.MarkupLine(error + (r.Page is GuestPage pg ? $" (guest {pg})" : ""));
            AnsiConsole.MarkupLine($"outcome: [bold]{r.Outcome}[/] in {r.Latency.TotalMicroseconds:0.0} µs; " +
                                   $"{(r.Outcome == ErrorOutcome.Recovered ? (r.Intact ? "content bit-exact" : "[red]content differs[/]") : "")}; " +
                                   $"frame now {r.FrameNow}");
            return r.Passed ? 0 : 1;
        }));
        return command;
    }

    // The campaign's disk file (RecoveryCampaign: pagelab-campaign-PID-SEED in the temporary directory), for a
    // process exiting at once, whose open handle would otherwise never delete it.
    private static void RemoveCampaignFiles()
    {
        foreach (string f in Directory.GetFiles(Path.GetTempPath(), $"pagelab-campaign-{Environment.ProcessId}-*")) File.Delete(f);
    }

    // Progress reported on the reporting thread itself (Progress<T> posts to the thread pool, so a bar fed by
    // it lags and jumps).
    private sealed class Synchronous(Action<int> report) : IProgress<int>
    {
        public void Report(int value) => report(value);
    }
}
