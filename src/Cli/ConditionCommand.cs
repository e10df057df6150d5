// `pagelab condition`: the memory-condition experiment. One adaptive cache, its VM's balloon inflating
// and deflating, run once driven by the hypervisor's condition and once by the guest OS's free memory.
using System.CommandLine;
using PageLab.Core.Condition;
using Spectre.Console;
using PageLab.Lab.Experiments;

namespace PageLab.Cli;

internal static class ConditionCommand
{
    public static Command Create()
    {
        var seed = CliOptions.Int("--seed", "Random seed of the cache's requests", int.MinValue, int.MaxValue, 1);
        var command = new Command("condition", "Compare an adaptive guest cache driven by the hypervisor's memory condition with one driven by guest free memory.");
        command.Options.Add(seed);
        command.SetAction(parse => Program.Guarded(() =>
        {
            int s = parse.GetValue(seed);
            var results = new[] { ConditionSource.Hypervisor, ConditionSource.GuestOs }
                .Select(src => ConditionExperiment.Run(src, s)).ToList();
            var table = new Table().Title("adaptive cache: hypervisor condition vs guest OS free memory");
            table.AddColumns("driven by", "hit rate", "hits", "slow hits", "misses", "cache page-outs", "guest swap-outs", "final entries", "first low tick");
            foreach (ConditionExperimentResult r in results)
                table.AddRow(r.Source.ToString(), $"{r.HitRate:P1}", $"{r.Hits}", $"{r.SlowHits}", $"{r.Misses}", $"{r.CachePageOuts}",
                    $"{r.GuestSwapOuts}", $"{r.FinalCapacity}",
                    r.Source == ConditionSource.Hypervisor ? $"{r.FirstLowTickHypervisor}" : $"{r.FirstLowTickGuestOs}");
            AnsiConsole.Write(table);
            return 0;
        }));
        return command;
    }
}
