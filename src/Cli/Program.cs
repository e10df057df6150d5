// Entry point of the `pagelab` tool: wires the subcommands into System.CommandLine and gives every
// command the same failure convention (one line on stderr, exit code 1).
using System.CommandLine;

namespace PageLab.Cli;

internal static class Program
{
    public static int Main(string[] args)
    {
        // Redirected output (CI, logs) gets a width that fits the tables instead of 80 columns.
        if (Console.IsOutputRedirected) Spectre.Console.AnsiConsole.Profile.Width = 160;
        var root = new RootCommand("PageLab: hypervisor memory management on real process memory.");
        root.Subcommands.Add(InfoCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(RunCommand.Create());
        root.Subcommands.Add(ConditionCommand.Create());
        Command campaign = CampaignCommand.Create();
        campaign.Subcommands.Add(ModelCommand.Create());
        root.Subcommands.Add(campaign);
        root.Subcommands.Add(CampaignCommand.CreateInject());
        return root.Parse(args).Invoke();
    }

    /// <summary>Runs a command body; an exception becomes its message on one stderr line and exit code 1.</summary>
    internal static int Guarded(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (Exception e)
        {
            return Fail(e.Message);
        }
    }

    /// <summary>Reports a failure on one stderr line; returns the exit code 1.</summary>
    internal static int Fail(string message)
    {
        // Some messages span lines (ArgumentOutOfRangeException appends "Actual value was ..."); keep one.
        string oneLine = string.Join(' ', message.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries));
        Console.Error.WriteLine($"pagelab: error: {oneLine}");
        return 1;
    }

    /// <summary>A byte count for people: "4096 B", "12.0 MiB".</summary>
    internal static string Bytes(long bytes) => bytes switch
    {
        < 1024 => $"{bytes} B",
        < 1024 * 1024 => $"{bytes / 1024.0:0.0} KiB",
        < 1024L * 1024 * 1024 => $"{bytes / (1024.0 * 1024):0.0} MiB",
        _ => $"{bytes / (1024.0 * 1024 * 1024):0.00} GiB",
    };
}
