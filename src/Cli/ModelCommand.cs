// `pagelab campaign model`: the long form of the engine's model-based interleaving check (random guest,
// host and error operations from three threads against a shadow of every page, everything checked after
// every round). The suite runs a short form of the same code.
using System.CommandLine;
using PageLab.Core.Recovery;
using Spectre.Console;

namespace PageLab.Cli;

internal static class ModelCommand
{
    public static Command Create()
    {
        var operations = new Option<long>("--operations") { Description = "Operations in all (three threads, one each per round; 3..30000000)", DefaultValueFactory = _ => 1_000_000 };
        var seed = new Option<int>("--seed") { Description = "Seed of the operations", DefaultValueFactory = _ => 1 };
        var gc = new Option<bool>("--gc-stress") { Description = "Run a thread that forces full GCs meanwhile" };
        var command = new Command("model", "Random operations from several threads against a shadow of every page; checks bytes, parity and frame accounting after every round.");
        command.Options.Add(operations);
        command.Options.Add(seed);
        command.Options.Add(gc);
        command.SetAction(parse => Program.Guarded(() =>
        {
            long ops = parse.GetValue(operations);
            if (ops is < 3 or > 30_000_000)
                throw new UsageException($"--operations {ops}: out of range (accepted: 3 to 30000000)");
            // Its threads work on the VMs' memory between rounds, so it cannot stop part way: a signal exits at
            // once (it writes no files), with the terminal's cursor shown again.
            using var interrupts = new Interrupts("the model check has no partial result; exiting", firstExits: true);
            int rounds = (int)((ops + 2) / 3); // one operation per thread per round, three threads
            ModelResult r = null!;
            AnsiConsole.Progress().Start(ctx =>
            {
                ProgressTask task = ctx.AddTask($"operations (seed {parse.GetValue(seed)}{(parse.GetValue(gc) ? ", GC stress on" : "")})", maxValue: rounds * 3L);
                r = InterleavingModel.Run(parse.GetValue(seed), rounds, parse.GetValue(gc), new Progress<long>(n => task.Value = n));
                task.Value = task.MaxValue;
            });
            var table = new Table().AddColumn("what").AddColumn(new TableColumn("count").RightAligned());
            table.AddRow("operations", $"{r.Operations:N0}");
            table.AddRow("rounds checked (bytes, parity, frame accounting)", $"{r.Rounds:N0}");
            table.AddRow("errors injected / reported", $"{r.Injected:N0} / {r.Reported:N0}");
            table.AddRow("recovered inside the fault handler", $"{r.HandlerRecovered:N0}");
            table.AddRow("contained (no good copy)", $"{r.Contained:N0}");
            table.AddRow("host swap-outs", $"{r.HostSwapOuts:N0}");
            table.AddRow("pages merged / copy-on-write breaks", $"{r.PagesMerged:N0} / {r.CowBreaks:N0}");
            table.AddRow("page checks", $"{r.PagesChecked:N0}");
            table.AddRow("problems", $"{r.Problems.Count}");
            AnsiConsole.Write(table);
            AnsiConsole.MarkupLine($"elapsed {r.Elapsed.TotalSeconds:0.0} s");
            foreach (string p in r.Problems.Take(20)) Console.Error.WriteLine($"pagelab: {p}");
            return r.Problems.Count == 0 ? 0 : 1;
        }));
        return command;
    }
}
