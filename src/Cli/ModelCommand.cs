// `pagelab campaign model`: the long form of the engine's model-based interleaving check (random guest,
// host and error operations from three threads against a shadow of every page, everything checked after
// every round). The suite runs a short form of the same code. With --os-failures it is the anomaly campaign:
// every feature at once while the engine's OS calls fail, each kind in turn and at random.
using System.CommandLine;
using PageLab.Core.Faults;
using PageLab.Core.Recovery;
using Spectre.Console;
using PageLab.Lab.Campaigns;

namespace PageLab.Cli;

internal static class ModelCommand
{
    public static Command Create()
    {
        var operations = new Option<long>("--operations") { Description = "Operations in all (three threads, one each per round; 3..30000000)", DefaultValueFactory = _ => 1_000_000 };
        var seed = new Option<int>("--seed") { Description = "Seed of the operations", DefaultValueFactory = _ => 1 };
        var gc = new Option<bool>("--gc-stress") { Description = "Run a thread that forces full GCs meanwhile" };
        var osFailures = new Option<bool>("--os-failures")
        {
            Description = "The anomaly campaign: every feature at once (fault-around, disk copies, free page reporting, kernel-delivered errors, VMs created and destroyed too) " +
                          "while the engine's OS calls fail, each kind in turn and at random, and reads and writes come up short",
        };
        osFailures.Aliases.Add("--os-faults"); // its first name: OS calls fail, no page fault is meant
        var command = new Command("model", "Random operations from several threads against a shadow of every page; checks bytes, parity and frame accounting after every round.");
        command.Options.Add(operations);
        command.Options.Add(seed);
        command.Options.Add(gc);
        command.Options.Add(osFailures);
        command.SetAction(parse => Program.Guarded(() =>
        {
            long ops = parse.GetValue(operations);
            if (ops is < 3 or > 30_000_000)
                throw new UsageException($"--operations {ops}: out of range (accepted: 3 to 30000000)");
            // A first signal stops it after the round under way (its threads and checks finish that round), and the
            // rounds done are reported; a second exits at once, the cursor shown again. The stop normally ends
            // within milliseconds and closes (deletes) the anomaly campaign's disk-copy files itself; a round that
            // hangs is the case the second signal is for, and then they must not stay behind.
            using var interrupts = new Interrupts("stopping after this round");
            using IDisposable removeDisk = interrupts.AtExitNow(RemoveModelFiles);
            int rounds = (int)((ops + 2) / 3); // one operation per thread per round, three threads
            ModelResult r = null!;
            AnsiConsole.Progress().Start(ctx =>
            {
                ProgressTask task = ctx.AddTask($"operations (seed {parse.GetValue(seed)}{(parse.GetValue(gc) ? ", GC stress on" : "")}" +
                                                $"{(parse.GetValue(osFailures) ? ", OS calls failing" : "")})", maxValue: rounds * 3L);
                r = InterleavingModel.Run(parse.GetValue(seed), rounds, parse.GetValue(gc), new Progress<long>(n => task.Value = n), parse.GetValue(osFailures),
                                          interrupts.Stopping);
                task.Value = r.Operations;
            });
            if (r.Stopped) AnsiConsole.MarkupLine($"campaign model stopped after {r.Rounds:N0} of {rounds:N0} rounds ({interrupts.Signal}); each round done was checked");
            var table = new Table().AddColumn("what").AddColumn(new TableColumn("count").RightAligned());
            table.AddRow("operations", $"{r.Operations:N0}");
            table.AddRow("rounds checked (bytes, parity, frame accounting)", $"{r.Rounds:N0}");
            table.AddRow("errors injected / reported", $"{r.Injected:N0} / {r.Reported:N0}");
            table.AddRow("recovered inside the fault handler", $"{r.HandlerRecovered:N0}");
            table.AddRow("contained (no good copy)", $"{r.Contained:N0}");
            table.AddRow("host swap-outs", $"{r.HostSwapOuts:N0}");
            table.AddRow("pages merged / copy-on-write breaks", $"{r.PagesMerged:N0} / {r.CowBreaks:N0}");
            table.AddRow("page checks", $"{r.PagesChecked:N0}");
            if (r.OsCalls is not null)
            {
                table.AddRow("errors delivered by the kernel (poison markers)", $"{r.KernelInjected:N0}");
                table.AddRow("VMs created and destroyed", $"{r.VmsCycled:N0}");
                table.AddRow("free pages reported (unmapped, frame given back)", $"{r.FreePagesReported:N0}");
                table.AddRow("operations refused by a failed OS call", $"{r.Refused:N0}");
                table.AddRow("process deaths (the campaign ran to its end in this process)", "0");
                table.AddRow("wrong bytes not flagged lost", $"{r.WrongBytes:N0}");
            }
            table.AddRow("problems", $"{r.Problems.Count}");
            AnsiConsole.Write(table);
            if (r.OsCalls is not null)
            {
                var os = new Table().Title("OS calls, per kind").AddColumn("kind")
                    .AddColumn(new TableColumn("calls").RightAligned()).AddColumn(new TableColumn("failed").RightAligned())
                    .AddColumn(new TableColumn("short").RightAligned());
                foreach ((OsCall kind, OsCallCounts c) in r.OsCalls.OrderBy(kv => kv.Key))
                    os.AddRow(kind.ToString(), $"{c.Calls:N0}", $"{c.Failed:N0}", kind is OsCall.Read or OsCall.Write ? $"{c.Shortened:N0}" : "");
                AnsiConsole.Write(os);
            }
            AnsiConsole.MarkupLine($"elapsed {r.Elapsed.TotalSeconds:0.0} s");
            foreach (string p in r.Problems.Take(20)) Console.Error.WriteLine($"pagelab: {p}");
            if (r.Problems.Count > 0) return ExitCodes.Failed;
            return r.Stopped ? interrupts.ExitCode : ExitCodes.Ok;
        }));
        return command;
    }

    // InterleavingModel's disk-copy files (pagelab-model-disk-PID-VM in the temporary directory), for a process
    // exiting at once, whose open handles would otherwise never delete them.
    private static void RemoveModelFiles()
    {
        foreach (string f in Directory.GetFiles(Path.GetTempPath(), $"pagelab-model-disk-{Environment.ProcessId}-*")) File.Delete(f);
    }
}
