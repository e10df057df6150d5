// `pagelab run [scenario.json]`: PageLab's main job. Runs a scenario (the built-in default when no file
// is given) with a live table of every VM's memory, then a summary, a PNG timeline and an optional trace.
using System.CommandLine;
using System.Diagnostics;
using PageLab.Report;
using Spectre.Console;
using Spectre.Console.Rendering;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Cli;

internal static partial class RunCommand
{
    /// <summary>Where outputs go when no path is given: the repository's ignored artifacts folder.</summary>
    internal const string DefaultOutputDirectory = "artifacts";

    public static Command Create()
    {
        var file = CliOptions.FileArgument("scenario", "Scenario JSON file (default: the built-in scenario; schema: docs/scenario-schema.md)", "pagelab run");
        var ticks = CliOptions.OptionalInt("--ticks", "Override the scenario's tick count", 1, int.MaxValue);
        var seed = CliOptions.OptionalInt("--seed", "Override the scenario's random seed (a fixed seed makes a run reproducible)", int.MinValue, int.MaxValue);
        var staticPartition = new Option<bool>("--static") { Description = "Keep the initial allocations (the static policy), for comparison" };
        var policy = CliOptions.Policy("--policy", "Override the scenario's allocation policy");
        var compare = CliOptions.PolicyList("--compare", "Run the scenario once per policy, same seed, and compare guest paging, host swapping, condition and allocations",
            Core.Scheduling.PolicyCatalog.BuiltIn);
        var print = new Option<bool>("--print-default") { Description = "Print the built-in scenario as JSON and exit" };
        var plot = CliOptions.File("--plot", $"Write the timeline PNG here (default: {DefaultOutputDirectory}/pagelab-<scenario>.png)");
        var noPlot = new Option<bool>("--no-plot") { Description = "Do not write the timeline PNG" };
        var trace = CliOptions.File("--trace", "Write the event trace (JSON lines) here");
        var json = CliOptions.File("--json", "Write the run's summary as one JSON object here, '-' for stdout (fields: docs/run-summary.md)");
        var csv = CliOptions.File("--csv", "Write the per-tick timeline here as CSV, one row per tick per VM (columns: docs/run-summary.md)");
        var set = CliOptions.Settings("--set", "Set a scenario key before the scenario is checked, e.g. idleTax=0.5 or vms[1].shares=2000 (repeatable)");
        var wide = new Option<bool>("--wide") { Description = "Print tables with every column whatever the terminal's width" };
        var command = new Command("run", "Run a scenario: VMs, workloads, balloons and the cooperative memory scheduler.");
        command.Arguments.Add(file);
        Option[] options = [ticks, seed, staticPartition, policy, compare, print, plot, noPlot, trace, json, csv, set, wide];
        foreach (Option o in options) command.Options.Add(o);
        command.SetAction(parse => Program.Guarded(() =>
        {
            string? f = parse.GetValue(file);
            // `--compare FILE`: the option's value is optional and the parser took the file as it.
            if (parse.GetValue(compare)?.NotPolicies is string word)
            {
                if (f is not null)
                    throw new UsageException($"--compare: '{word}' is not a list of policies (accepted: {string.Join(", ", Core.Scheduling.PolicyCatalog.BuiltIn)} or a class, separated by commas)");
                f = word;
            }
            if (parse.GetValue(print))
            {
                if (f is not null) throw new UsageException($"--print-default prints the built-in scenario and runs nothing; it takes no scenario file (got {f})");
                if (options.FirstOrDefault(o => o != print && CliOptions.Given(parse, o)) is Option other)
                    throw new UsageException($"--print-default and {other.Name} cannot be used together: --print-default only prints the built-in scenario");
                Console.WriteLine(Scenario.Default.ToJson());
                return ExitCodes.Ok;
            }
            CliOptions.Conflict(parse, staticPartition, compare, "--compare names the policies to run (static among them)");
            CliOptions.Conflict(parse, staticPartition, policy, "--static is --policy static");
            CliOptions.Conflict(parse, policy, compare, "--compare names the policies to run");
            CliOptions.Conflict(parse, plot, noPlot, "give one");
            // Everything is checked before anything runs or any output file is created.
            Terminal.Wide = parse.GetValue(wide);
            List<ScenarioSetting> settings = (parse.GetValue(set) ?? []).Select(v => ScenarioSettings.Parse("--set", v)).ToList();
            if (CliOptions.Given(parse, ticks) && settings.FirstOrDefault(x => x.Key == "ticks") is { } st)
                throw new UsageException($"--ticks and --set {st} cannot be used together: both set the run's ticks; give one");
            if (CliOptions.Given(parse, seed) && settings.FirstOrDefault(x => x.Key == "seed") is { } ss)
                throw new UsageException($"--seed and --set {ss} cannot be used together: both set the seed; give one");
            Scenario s = f is null && settings.Count == 0 ? Scenario.Default : ScenarioInput.Load(f, settings);
            if (parse.GetValue(ticks) is int t) s = WithTicks(s, t, f);
            if (parse.GetValue(seed) is int sd) s = s with { Seed = sd };
            if (parse.GetValue(staticPartition)) s = s with { Policy = "static", Adaptive = true };
            if (parse.GetValue(policy) is string pol) s = s with { Policy = pol, Adaptive = true };
            string[] policies = CliOptions.Given(parse, compare) ? parse.GetValue(compare)!.Policies : [s.PolicyName];
            foreach (string pName in policies)
                (s with { Policy = pName, Adaptive = true }).Validate(f is null ? "--compare" : Path.GetFullPath(f));
            s.Validate(f is null ? "built-in scenario" : Path.GetFullPath(f));
            string? plotPath = parse.GetValue(noPlot) ? null : parse.GetValue(plot) is string p ? p == "-" ? "-" : Path.GetFullPath(p) : DefaultPlotPath(s);
            string? tracePath = parse.GetValue(trace) is string tr ? tr == "-" ? "-" : Path.GetFullPath(tr) : null;
            string? jsonPath = parse.GetValue(json) is string js ? js == "-" ? "-" : Path.GetFullPath(js) : null;
            string? csvPath = parse.GetValue(csv) is string cs ? cs == "-" ? "-" : Path.GetFullPath(cs) : null;
            bool several = CliOptions.Given(parse, compare);
            string[] runs = several ? policies.Select(SuffixOf).ToArray() : [""];
            if (runs.Distinct().Count() != runs.Length)
                throw new UsageException($"--compare: two of the policies would write the same files (suffixes {string.Join(", ", runs)}); name each policy once, and user classes by different class names");
            string policyOption = CliOptions.Given(parse, compare) ? "--compare" : CliOptions.Given(parse, policy) ? "--policy" : "policy";
            foreach (string pName in policies) CheckPolicy(policyOption, pName);
            (string, string?)[] outputs = runs.SelectMany(x => new[]
            {
                ("--plot", Suffixed(plotPath, x)), ("--trace", Suffixed(tracePath, x)), ("--json", Suffixed(jsonPath, x)), ("--csv", Suffixed(csvPath, x)),
            }).Append(("--plot", several ? Suffixed(plotPath, "compare") : null)).ToArray();
            OutputPaths.CheckDistinct(outputs);
            OutputPaths.CheckNotInput(outputs, ("the scenario file", f is null ? null : Path.GetFullPath(f)));
            foreach (string suffix in runs)
            {
                string? plotFile = Suffixed(plotPath, suffix), traceFile = Suffixed(tracePath, suffix), jsonFile = Suffixed(jsonPath, suffix);
                string? csvFile = Suffixed(csvPath, suffix);
                if (csvFile is not null) OutputPaths.CheckWritable("--csv", csvFile);
                if (plotFile is not null)
                {
                    if (!CliOptions.Given(parse, plot)) Directory.CreateDirectory(Path.GetDirectoryName(plotFile)!);
                    OutputPaths.CheckWritable("--plot", plotFile);
                }
                if (traceFile is not null) OutputPaths.CheckWritable("--trace", traceFile);
                if (jsonFile is not null and not "-") OutputPaths.CheckWritable("--json", jsonFile);
            }
            Descriptors.CheckRoomFor(s.Vms.Count, f is null ? "the built-in scenario" : $"{f} ({s.Vms.Count} VMs)");
            using var interrupts = new Interrupts();
            // Held until the command ends: another PageLab process given one of these files is refused.
            using OutputLocks locks = OutputLocks.Take(outputs);
            using IDisposable removeUnwritten = interrupts.AtExitNow(locks.RemoveUnwritten);
            // With the summary on stdout, everything for people goes to stderr, so stdout is JSON only.
            using HumanOutput human = jsonPath == "-" ? HumanOutput.ToStderr() : HumanOutput.Unchanged();
            string? source = f is null ? null : Path.GetFullPath(f);
            var results = new List<Summary>();
            if (several)
            {
                for (int i = 0; i < policies.Length && !interrupts.Requested; i++)
                {
                    string suffix = runs[i];
                    results.Add(RunOne(s with { Policy = policies[i], Adaptive = true }, live: false, $"run {i + 1}/{policies.Length} ({policies[i]})",
                        Suffixed(plotPath, suffix), Suffixed(tracePath, suffix), source, interrupts, Suffixed(csvPath, suffix), locks));
                    WriteSummary(results[^1], Suffixed(jsonPath, suffix), human.Stdout, locks);
                }
                if (results.Count == policies.Length && results.All(r => r.InterruptedBy is null))
                {
                    ShowComparison(results);
                    if (plotPath is not null)
                    {
                        string comparePlot = Suffixed(plotPath, "compare")!;
                        PlotImage image = ComparisonPlot.SavePng(results.Select(r => r.Data).ToList(), locks.Partial(comparePlot));
                        locks.Commit(comparePlot);
                        AnsiConsole.MarkupLine($"comparison plot: [bold]{Markup.Escape(comparePlot)}[/] ({image.WidthPx}x{image.HeightPx} px)");
                    }
                }
            }
            else
            {
                results.Add(RunOne(s, live: !Console.IsOutputRedirected && jsonPath != "-", label: null, plotPath, tracePath, source, interrupts, csvPath, locks));
                WriteSummary(results[^1], jsonPath, human.Stdout, locks);
            }
            if (results.FirstOrDefault(r => r.InterruptedBy is not null) is Summary cut)
            {
                Console.Error.WriteLine($"pagelab: interrupted at tick {cut.Last.Tick} of {cut.Scenario.Ticks} ({cut.InterruptedBy})" +
                                        (several && results.Count < policies.Length ? $"; {policies.Length - results.Count} of the {policies.Length} runs did not start" : ""));
                return interrupts.ExitCode;
            }
            return results.All(r => r.AccountingOk) ? ExitCodes.Ok : ExitCodes.Failed;
        }));
        return command;
    }

    /// <summary>Loads a user's policy class and reads its name before anything runs, so a class that cannot
    /// be used fails now (exit 2) and not after the other policies of --compare wrote their outputs.</summary>
    internal static void CheckPolicy(string option, string name)
    {
        if (Core.Scheduling.PolicyCatalog.BuiltIn.Contains(name)) return;
        Core.Scheduling.IAllocationPolicy instance;
        try
        {
            instance = Core.Scheduling.PolicyCatalog.Create(name);
        }
        catch (ArgumentException e)
        {
            throw new UsageException($"{option}: {Program.PlainMessage(e)}");
        }
        try
        {
            _ = instance.Name;
        }
        catch (Exception e)
        {
            // A user's code: whatever it throws is its own failure, said with the class it came from.
            throw new UsageException($"{option}: policy '{name}': its Name property failed ({e.GetType().Name}: {Program.PlainMessage(e)})");
        }
        finally
        {
            (instance as IDisposable)?.Dispose();
        }
    }

    /// <summary>The scenario cut (or stretched) to <paramref name="ticks"/>. The built-in scenario loses the
    /// injections past the new end, named in a note; a file's injections past it are an error naming the way out.</summary>
    internal static Scenario WithTicks(Scenario s, int ticks, string? file)
    {
        List<InjectionSpec> past = s.Injections.Where(j => j.Tick > ticks).ToList();
        if (past.Count == 0) return s with { Ticks = ticks };
        if (file is not null)
        {
            int i = s.Injections.IndexOf(past[0]);
            throw new UsageException($"--ticks {ticks}: injections[{i}] of {file} is at tick {past[0].Tick}, after the run's end; " +
                                     $"give --ticks {past.Max(j => j.Tick)} or more, or remove the injection from the file");
        }
        Console.Error.WriteLine($"pagelab: note: --ticks {ticks} drops {past.Count} of the built-in scenario's {s.Injections.Count} injections, those past tick {ticks}: " +
                                string.Join(", ", past.Select(j => $"tick {j.Tick} {j.Kind} into {j.Vm}'s {j.Target}")));
        return s with { Ticks = ticks, Injections = s.Injections.Where(j => j.Tick <= ticks).ToList() };
    }

    internal static string DefaultPlotPath(Scenario s) =>
        Path.GetFullPath(Path.Combine(DefaultOutputDirectory, $"pagelab-{SafeFileName(s.Name)}.png"));

    private static string SafeFileName(string name)
    {
        char[] bad = Path.GetInvalidFileNameChars();
        return new string(name.Select(c => bad.Contains(c) || char.IsWhiteSpace(c) ? '-' : c).ToArray());
    }

    // Writes a run's summary to its file (whole, or not at all: see OutputLocks), or as one line to stdout
    // ("-"); the success line goes to people.
    private static void WriteSummary(Summary run, string? path, TextWriter stdout, OutputLocks locks)
    {
        if (path is null) return;
        string text = run.Data.ToJson();
        if (path == "-")
        {
            stdout.WriteLine(text);
            stdout.Flush();
            return;
        }
        File.WriteAllText(locks.Partial(path), text + "\n");
        locks.Commit(path);
        AnsiConsole.MarkupLine($"summary: [bold]{Markup.Escape(path)}[/]");
    }

    // A policy's name as a file-name suffix: "esx", or the class name of a user's policy.
    private static string SuffixOf(string policy)
    {
        string name = policy.Split(',')[0];
        name = name[(name.LastIndexOfAny([':', '.']) + 1)..];
        return SafeFileName(name.Length == 0 ? "policy" : name);
    }

    // "out/plot.png" + "static" -> "out/plot-static.png"; no suffix, or stdout ("-"): the path itself.
    private static string? Suffixed(string? path, string suffix) =>
        path is null or "-" || suffix.Length == 0 ? path : Path.Combine(Path.GetDirectoryName(path) ?? "", $"{Path.GetFileNameWithoutExtension(path)}-{suffix}{Path.GetExtension(path)}");

    /// <summary>What one run did. <paramref name="InterruptedBy"/> names the signal that stopped it early.</summary>
    private sealed record Summary(Scenario Scenario, TickSnapshot Last, bool AccountingOk, string? InterruptedBy, RunSummary Data);

    private static Summary RunOne(Scenario s, bool live, string? label, string? plotPath, string? tracePath, string? source, Interrupts interrupts, string? csvPath,
        OutputLocks locks)
    {
        AnsiConsole.MarkupLine($"{(label is null ? "" : $"{Markup.Escape(label)}: ")}[bold]{Markup.Escape(s.Name)}[/]: {s.Vms.Count} VMs, " +
                               $"host {s.HostPages} pages, {s.Ticks} ticks, policy {s.PolicyName}{(s.WorkConserving && Core.Scheduling.PolicyCatalog.TraitsOf(s.PolicyName).WorkConserving ? " (work-conserving)" : "")}, " +
                               (Order(s) == Core.Scheduling.Reclamation.Balloon ? "" : $"reclamation {Core.Scheduling.ReclamationParse.Format(Order(s))}, ") + $"seed {s.Seed}");
        var clock = Stopwatch.StartNew();
        // The guests' swap files go to a directory of this run, removed at the end however the run ends.
        string swapDirectory = Path.Combine(Path.GetTempPath(), $"pagelab-run-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(swapDirectory);
        using IDisposable removeSwap = interrupts.AtExitNow(() => RemoveDirectory(swapDirectory));
        try
        {
            using var runner = new ScenarioRunner(s, swapDirectory);
            var bootClock = Stopwatch.StartNew();
            int bootShown = 0;
            runner.BootProgress += (done, total) =>
            {
                // Only boots that take a while say so, a line per 10 % (a boot inflating big balloons).
                int percent = (int)(100 * done / total);
                if (bootClock.Elapsed.TotalSeconds < 1 || percent < bootShown + 10) return;
                bootShown = percent;
                Console.WriteLine($"  boot: balloons inflated {done}/{total} pages ({percent}%), {bootClock.Elapsed.TotalSeconds:0.0} s");
            };
            RunTimeline timeline = RunTimeline.Attach(runner);
            RunTraceWriter? trace = tracePath is null ? null : new RunTraceWriter(runner, locks.Partial(tracePath));
            string? interruptedBy = null;
            TickSnapshot last;
            TimeSpan booted = TimeSpan.Zero, ticked = TimeSpan.Zero;
            using (IDisposable? cutTrace = trace is null ? null : interrupts.AtExitNow(trace.Abandon))
            {
                try
                {
                    // Booting a large scenario (arena, guests, balloons to their start) takes a while: say so.
                    ulong guestPages = s.Vms.Aggregate(0UL, (n, v) => n + v.Pages);
                    Console.WriteLine($"  booting {s.Vms.Count} VM{(s.Vms.Count == 1 ? "" : "s")} ({guestPages} guest pages) on {s.HostPages} host pages");
                    runner.Boot(() => interrupts.Requested);
                    booted = clock.Elapsed;
                    Console.WriteLine($"  booted in {booted.TotalSeconds:0.0} s");
                    last = new(0, runner.Snapshot(), runner.Arena.Counts.Free, 0, new(new Dictionary<string, int>(), new Dictionary<string, int>(), 0, 0));
                    last = Ticks(runner, s, live, last, () => interrupts.Requested || trace?.Error is not null);
                    ticked = clock.Elapsed - booted;
                    if (interrupts.Requested && runner.Tick < s.Ticks)
                    {
                        interruptedBy = interrupts.Signal!;
                        runner.Interrupt(interruptedBy);
                    }
                }
                finally
                {
                    trace?.Dispose(); // the trace is complete (end or interrupted) before anything else is written
                }
            }
            if (trace?.Error is string error) throw new IOException($"--trace {tracePath}: cannot be written ({error})");
            // Whole (to the end, or to the interruption): only now does it replace what the file held.
            if (tracePath is not null) locks.Commit(tracePath);
            List<string> problems = runner.CheckAccounting();
            AnsiConsole.MarkupLine($"{last.TransferredFrames} frames moved between VMs by ballooning; {clock.Elapsed.TotalSeconds:0.0} s.");
            if (problems.Count == 0) AnsiConsole.MarkupLine("[green]Frame accounting: every frame is free or owned by exactly one guest page or pool.[/]");
            else foreach (string p in problems) AnsiConsole.MarkupLine($"[red]Frame accounting: {Markup.Escape(p)}[/]");
            if (runner.Scheduler.Scanner?.Metrics is { } sm) WriteSharing(sm, last);
            Terminal.Write(SummaryTable(timeline));
            if (plotPath is not null)
            {
                PlotImage image = TimelinePlot.SavePng(timeline, locks.Partial(plotPath));
                locks.Commit(plotPath);
                AnsiConsole.MarkupLine($"plot: [bold]{Markup.Escape(plotPath)}[/] ({image.WidthPx}x{image.HeightPx} px)");
                if (!image.HasText) AnsiConsole.MarkupLine("[yellow]plot: no font found, so the plot has no labels (Debian/Ubuntu: sudo apt-get install fonts-dejavu-core)[/]");
            }
            if (trace is not null) AnsiConsole.MarkupLine($"trace: [bold]{Markup.Escape(tracePath!)}[/] ({trace.EventsWritten} events)");
            if (csvPath is not null)
            {
                using (var writer = new StreamWriter(locks.Partial(csvPath), append: false))
                    timeline.WriteCsv(writer);
                locks.Commit(csvPath);
                AnsiConsole.MarkupLine($"timeline: [bold]{Markup.Escape(csvPath)}[/] ({timeline.Ticks.Count} ticks x {timeline.Vms.Count} VMs)");
            }
            var timings = new RunTimings(booted.TotalSeconds, ticked.TotalSeconds, last.Tick == 0 ? 0 : ticked.TotalMilliseconds / last.Tick, clock.Elapsed.TotalSeconds);
            RunSummary data = RunSummary.Of(timeline, last, runner.Arena, problems, timings, source, interruptedBy, runner.Scheduler.Scanner?.Metrics);
            return new Summary(s, last, problems.Count == 0, interruptedBy, data);
        }
        finally
        {
            RemoveDirectory(swapDirectory);
        }
    }

    // Removes a directory of this run's temporary files; the run's end and a second signal may race to it.
    private static void RemoveDirectory(string path)
    {
        try
        {
            Directory.Delete(path, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
            // Already removed by the other of the two.
        }
    }

    // Advances the run to its last tick, or until stop() says to end it at a tick boundary, showing progress.
    private static TickSnapshot Ticks(ScenarioRunner runner, Scenario s, bool live, TickSnapshot last, Func<bool> stop)
    {
        var progress = new RunProgress(s.Ticks);
        int every = Math.Max(1, s.Ticks / 20);
        if (live)
        {
            AnsiConsole.Live(Table(last, s, progress.Caption(0))).Start(ctx =>
            {
                while (runner.Tick < s.Ticks && !stop())
                {
                    last = runner.Advance();
                    if (last.Tick % every == 0 || last.Tick == s.Ticks) ctx.UpdateTarget(Table(last, s, progress.Caption(last.Tick)));
                }
                ctx.UpdateTarget(Table(last, s, progress.Caption(last.Tick)));
            });
            return last;
        }
        while (runner.Tick < s.Ticks && !stop())
        {
            last = runner.Advance();
            if (progress.Due(last.Tick)) Console.WriteLine($"  {progress.Caption(last.Tick)}");
        }
        Terminal.Write(Table(last, s, progress.Caption(last.Tick)));
        return last;
    }
}

/// <summary>Progress of a run in ticks (or a campaign in injections): percentage, elapsed wall time and an estimate of what is left.</summary>
internal sealed class RunProgress(int totalTicks, string unit = "tick")
{
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private int _nextPercent = 10;

    /// <summary>True once per 10 % of the run (for line-by-line progress when output is redirected).</summary>
    public bool Due(int tick)
    {
        if (tick * 100L < _nextPercent * (long)totalTicks) return false;
        while (tick * 100L >= _nextPercent * (long)totalTicks) _nextPercent += 10;
        return true;
    }

    public string Caption(int tick)
    {
        double elapsedS = _clock.Elapsed.TotalSeconds;
        string left = tick == 0 || tick >= totalTicks ? "" : $", ~{elapsedS / tick * (totalTicks - tick):0.0} s left";
        return $"{unit} {tick}/{totalTicks} ({100L * tick / totalTicks}%), {elapsedS:0.0} s{left}";
    }
}
