// `pagelab sweep SWEEP.json`: runs a scenario over a grid of keys and seeds, each run a separate `pagelab run`
// process (-j at a time), skipping runs a previous sweep finished; then one row per run to Parquet and CSV,
// and a plot of each figure against each swept key. --emit-jobs prints the runs as commands; --merge collects.
using System.CommandLine;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Spectre.Console;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Cli;

internal static class SweepCommand
{
    public static Command Create()
    {
        var file = CliOptions.FileArgument("sweep", "Sweep JSON file: scenario, grid, seeds, set (docs/sweep.md)", "pagelab sweep", required: true);
        var jobs = CliOptions.Int("-j", "Runs at a time", 1, 1024, Environment.ProcessorCount);
        var output = CliOptions.File("--out", "Directory of the sweep's results (default: artifacts/sweep-<sweep file name>)");
        output.Aliases.Add("-o");
        var emit = new Option<bool>("--emit-jobs") { Description = "Print one shell command per run not yet done, run nothing (for Slurm arrays, GNU parallel)" };
        var merge = new Option<bool>("--merge") { Description = "Run nothing: collect the runs' summaries into the Parquet, CSV and plot" };
        var noPlot = new Option<bool>("--no-plot") { Description = "Do not draw the sweep's plot" };
        var command = new Command("sweep", "Run a scenario over a grid of scenario keys and seeds, in parallel processes; one row per run to Parquet and CSV.");
        command.Arguments.Add(file);
        foreach (Option o in new Option[] { jobs, output, emit, merge, noPlot }) command.Options.Add(o);
        command.SetAction(parse => Program.Guarded(() =>
        {
            CliOptions.Conflict(parse, emit, merge, "--emit-jobs prints the runs, --merge collects their results afterwards");
            CliOptions.Conflict(parse, emit, jobs, "--emit-jobs runs nothing");
            CliOptions.Conflict(parse, merge, jobs, "--merge runs nothing");
            string path = parse.GetValue(file)!;
            SweepSpec spec = SweepSpec.Load(path);
            List<SweepRun> runs = spec.Runs();
            // Every point is checked before anything runs: a bad value fails the sweep now, not run 17 of 18.
            var vmNames = new List<string>();
            foreach (SweepRun r in runs.DistinctBy(r => string.Join(' ', r.Point)))
            {
                try
                {
                    vmNames.AddRange(ScenarioInput.Load(spec.Scenario, spec.SettingsOf(r), "grid").Vms.Select(v => v.Name));
                }
                catch (ScenarioException e)
                {
                    throw new UsageException($"sweep file {path}: point {string.Join(' ', r.Point)}: {e.Message}");
                }
            }
            // Per-VM columns are vm_<name>_<figure> with the name's brackets and dots made '_': two VMs that
            // differ only there would share one column (one VM's figures lost), so such a sweep is refused now.
            if (vmNames.Distinct().GroupBy(SweepSpec.ColumnName).FirstOrDefault(g => g.Count() > 1) is { } clash)
                throw new UsageException($"sweep file {path}: the VMs '{string.Join("' and '", clash)}' would share the table's columns vm_{clash.Key}_*; " +
                                         "rename one of them (VM names may differ in more than '.', '[' and ']')");
            if (parse.GetValue(output) is "") throw new UsageException("--out: the directory name is empty; give a directory");
            string outDir = Path.GetFullPath(parse.GetValue(output) ?? Path.Combine(RunCommand.DefaultOutputDirectory, $"sweep-{Path.GetFileNameWithoutExtension(path)}"));
            if (System.IO.File.Exists(outDir)) throw new UsageException($"--out {outDir}: is a file; give a directory");
            string runsDir = Path.Combine(outDir, "runs");
            (string, string?)[] written = [("--out", Path.Combine(outDir, "sweep.parquet")), ("--out", Path.Combine(outDir, "sweep.csv")),
                ("--out", parse.GetValue(noPlot) ? null : Path.Combine(outDir, "sweep.png"))];
            OutputPaths.CheckNotInput(written, ("the sweep file", Path.GetFullPath(path)), ("the sweep's scenario file", spec.Scenario));
            if (!parse.GetValue(merge) && !Directory.Exists(outDir))
            {
                try
                {
                    Directory.CreateDirectory(outDir);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // /proc/x and the like: the parent exists but takes no new entries.
                    string why = e switch
                    {
                        UnauthorizedAccessException => "permission denied",
                        FileNotFoundException or DirectoryNotFoundException => $"{Path.GetDirectoryName(outDir)} takes no new directories",
                        IOException io => OutputPaths.Reason(io, outDir),
                        _ => e.Message,
                    };
                    throw new UsageException($"--out {outDir}: the directory cannot be created ({why})");
                }
            }
            if (parse.GetValue(emit))
            {
                Directory.CreateDirectory(runsDir); // where the commands write their summaries
                foreach (SweepRun r in runs.Where(r => Finished(runsDir, r) is null))
                    Console.WriteLine(string.Join(' ', RunArguments(spec, r, runsDir, withProgram: true).Select(Quote)));
                return ExitCodes.Ok;
            }
            if (!parse.GetValue(merge))
            {
                Directory.CreateDirectory(runsDir); // --merge runs nothing, so it creates nothing either
                int failed = RunAll(spec, runs, runsDir, parse.GetValue(jobs), out bool interrupted, out int exitCode);
                if (interrupted)
                {
                    Console.Error.WriteLine($"pagelab: sweep interrupted; run the same command again to do the runs not done");
                    return exitCode;
                }
                if (failed > 0) return Program.Fail($"{failed} of {runs.Count} runs failed (above); run the same command again to retry them");
            }
            List<RunSummary?> summaries = runs.Select(r => Finished(runsDir, r)).ToList();
            List<SweepRun> missing = runs.Where((r, i) => summaries[i] is null).ToList();
            if (missing.Count > 0)
                return Program.Fail($"{missing.Count} of {runs.Count} runs have no finished summary in {runsDir} (first: {missing[0].Describe()}); " +
                                    $"run them (pagelab sweep {path} --emit-jobs lists them) before --merge");
            SweepTable table = SweepTable.Of(spec, runs, summaries!);
            string parquet = Path.Combine(outDir, "sweep.parquet"), csv = Path.Combine(outDir, "sweep.csv");
            string? png = parse.GetValue(noPlot) ? null : Path.Combine(outDir, "sweep.png");
            // Each written beside itself and renamed over the old one when whole: a failed or killed merge keeps the old table.
            using OutputLocks locks = OutputLocks.Take(("--out", parquet), ("--out", csv), ("--out", png));
            table.WriteParquet(locks.Partial(parquet));
            locks.Commit(parquet);
            table.WriteCsv(locks.Partial(csv));
            locks.Commit(csv);
            AnsiConsole.MarkupLine($"sweep: [bold]{runs.Count}[/] runs ({runs.Count / spec.Seeds.Count} points x {spec.Seeds.Count} seeds), {table.Columns.Count} columns");
            AnsiConsole.MarkupLine($"parquet: [bold]{Markup.Escape(parquet)}[/]");
            AnsiConsole.MarkupLine($"csv: [bold]{Markup.Escape(csv)}[/]");
            if (png is not null)
            {
                PageLab.Report.PlotImage image = PageLab.Report.SweepPlot.SavePng(locks.Partial(png), Path.GetFileNameWithoutExtension(path),
                    spec.Grid.Select(g => SweepSpec.ColumnName(g.Key)).ToList(), SweepTable.PlottedFigures, table.Rows());
                locks.Commit(png);
                AnsiConsole.MarkupLine($"plot: [bold]{Markup.Escape(png)}[/] ({image.WidthPx}x{image.HeightPx} px)");
            }
            return ExitCodes.Ok;
        }));
        return command;
    }

    /// <summary>The run-summary format this pagelab writes and reads (RunSummary.Format, docs/run-summary.md).</summary>
    internal const int SummaryFormat = 1;

    /// <summary>The run's summary if a previous or this sweep finished it (a whole summary of all its ticks), else null.</summary>
    internal static RunSummary? Finished(string runsDir, SweepRun run)
    {
        string file = Path.Combine(runsDir, $"{run.Id}.json");
        try
        {
            RunSummary s = RunSummary.FromJson(System.IO.File.ReadAllText(file));
            // A summary of another format (a newer or older pagelab's) may mean other things: run it again.
            return s.Format == SummaryFormat && s.Interrupted is null && s.TicksRun == s.Ticks && s.Seed == run.Seed ? s : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Text.Json.JsonException)
        {
            return null; // not there, being written, or cut short
        }
    }

    /// <summary>The `pagelab run` arguments of <paramref name="run"/> (with the program to start first when
    /// <paramref name="withProgram"/>): no plot, its summary to runs/ID.json, its seed and settings.</summary>
    internal static List<string> RunArguments(SweepSpec spec, SweepRun run, string runsDir, bool withProgram)
    {
        var args = new List<string>();
        if (withProgram) args.AddRange(Self());
        args.Add("run");
        if (spec.Scenario is not null) args.Add(spec.Scenario);
        args.AddRange(["--no-plot", "--json", Path.Combine(runsDir, $"{run.Id}.json"), "--seed", $"{run.Seed}"]);
        foreach (ScenarioSetting s in spec.SettingsOf(run)) args.AddRange(["--set", $"{s.Key}={s.Value?.ToJsonString() ?? "null"}"]);
        return args;
    }

    // How to start this same pagelab: its apphost when that is what runs, else `dotnet pagelab.dll` (the
    // dotnet that runs this process, or the SDK's, or the one on PATH).
    private static string[] Self()
    {
        string? process = Environment.ProcessPath;
        string dll = typeof(SweepCommand).Assembly.Location;
        if (process is not null && Path.GetFileNameWithoutExtension(process) == Path.GetFileNameWithoutExtension(dll)) return [process];
        string dotnet = process is not null && Path.GetFileNameWithoutExtension(process) == "dotnet" ? process
            : Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet";
        return [dotnet, dll];
    }

    // A word for POSIX shells: as it is when plain, else in single quotes.
    private static string Quote(string word) =>
        word.Length > 0 && word.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:,+@%".Contains(c)) ? word : $"'{word.Replace("'", "'\\''")}'";

    // Runs every run not finished yet, `jobs` at a time, each as its own process; returns how many failed.
    private static int RunAll(SweepSpec spec, List<SweepRun> runs, string runsDir, int jobs, out bool interrupted, out int exitCode)
    {
        List<SweepRun> todo = runs.Where(r => Finished(runsDir, r) is null).ToList();
        Console.WriteLine($"sweep: {runs.Count} runs, {runs.Count - todo.Count} already done, {todo.Count} to run, {jobs} at a time");
        using var interrupts = new Interrupts("stopping: no new runs; waiting for those running");
        // A second signal exits at once: the runs in progress are ended with it, not left running.
        var running = new System.Collections.Concurrent.ConcurrentDictionary<int, Process>();
        using IDisposable endRuns = interrupts.AtExitNow(() =>
        {
            foreach (Process p in running.Values)
            {
                try
                {
                    p.Kill(entireProcessTree: true);
                }
                catch (InvalidOperationException)
                {
                    // It ended meanwhile.
                }
            }
        });
        int done = 0, failed = 0;
        var clock = Stopwatch.StartNew();
        Parallel.ForEach(todo, new ParallelOptions { MaxDegreeOfParallelism = jobs }, run =>
        {
            if (interrupts.Requested) return;
            var info = new ProcessStartInfo(Self()[0]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (string a in RunArguments(spec, run, runsDir, withProgram: true).Skip(1)) info.ArgumentList.Add(a);
            info.Environment["COLUMNS"] = "160";
            using Process p = Process.Start(info)!;
            running[p.Id] = p;
            Task<string> stderr = p.StandardError.ReadToEndAsync();
            p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            running.TryRemove(p.Id, out _);
            string err = stderr.Result;
            lock (runs)
            {
                done++;
                bool ok = p.ExitCode == 0 && Finished(runsDir, run) is not null;
                if (!ok && !interrupts.Requested) failed++;
                string what = ok ? "done" : $"[red]failed (exit {p.ExitCode})[/]: {Markup.Escape(LastLine(err))}";
                AnsiConsole.MarkupLine($"  [[{done}/{todo.Count}]] {Markup.Escape(run.Describe())}: {what}, {clock.Elapsed.TotalSeconds:0.0} s");
            }
        });
        interrupted = interrupts.Requested;
        exitCode = interrupts.ExitCode;
        return failed;
    }

    private static string LastLine(string text) =>
        text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).LastOrDefault() ?? "(no message)";
}
