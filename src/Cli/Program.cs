// Entry point of the `pagelab` tool: wires the subcommands into System.CommandLine and gives every
// command the same failure convention (one or two plain lines on stderr, exit codes in ExitCodes).
using System.CommandLine;
using System.Globalization;
using PageLab.Lab.Scenarios;

namespace PageLab.Cli;

/// <summary>What `pagelab` exits with. Scripts can tell bad input (2) from a run that went wrong (1).</summary>
internal static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>The command ran and something failed (a broken check, an OS error, an unwritable output).</summary>
    public const int Failed = 1;
    /// <summary>Bad command line or bad scenario file: nothing ran.</summary>
    public const int Usage = 2;
    /// <summary>128 + the signal number, as shells report a process a signal stopped.</summary>
    public const int Sigint = 130, Sigterm = 143;
}

/// <summary>Bad input found by a command's own checks (conflicting options, unusable paths): exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);

internal static class Program
{
    public static int Main(string[] args)
    {
        // Messages in one language, so the parser's errors can be rephrased (Explain) and scripts can match them.
        CultureInfo.CurrentUICulture = CultureInfo.InvariantCulture;
        // Before anything else opens a file: a closed stdout's number is soon some other file's, and every write
        // to it would fail as "Access to the path is denied" (or land in that file).
        if (!Descriptors.StdoutWritable())
            return Fail("standard output is closed or not writable (was it closed with >&-?); send it to a file or to /dev/null");
        PrepareErrorPath();
        try
        {
            // COLUMNS or the terminal's width; redirected output (CI, logs) gets 160 so tables stay whole.
            Terminal.Apply(Console.IsOutputRedirected);
            Terminal.Wide = false;
            RootCommand root = CreateRoot();
            ParseResult parse = root.Parse(args);
            if (parse.Errors.Count > 0) return ParseErrors(parse);
            // No termination handling by System.CommandLine: `run` handles SIGINT and SIGTERM itself (Interrupts).
            return parse.Invoke(new InvocationConfiguration { ProcessTerminationTimeout = null, EnableDefaultExceptionHandler = false });
        }
        catch (Exception e)
        {
            // Outside a command's own guard (loading the parser or the console library, which needs free
            // descriptors): still one line and exit 1, never the runtime's abort (134) with a stack trace.
            return Fail(Descriptors.Explain(e) ?? PlainMessage(e));
        }
    }

    internal static RootCommand CreateRoot()
    {
        var root = new RootCommand("PageLab: hypervisor memory management on real process memory.");
        root.Subcommands.Add(InfoCommand.Create());
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(RunCommand.Create());
        root.Subcommands.Add(ValidateCommand.Create());
        root.Subcommands.Add(SweepCommand.Create());
        root.Subcommands.Add(ConditionCommand.Create());
        root.Subcommands.Add(SharingCommand.Create());
        root.Subcommands.Add(TraceCommand.Create());
        Command campaign = CampaignCommand.Create();
        campaign.Subcommands.Add(ModelCommand.Create());
        root.Subcommands.Add(campaign);
        root.Subcommands.Add(CampaignCommand.CreateInject());
        return root;
    }

    // The parser's first error in plain words, and where to find the accepted options; exit code 2.
    private static int ParseErrors(ParseResult parse)
    {
        string command = parse.CommandResult.Command is RootCommand ? "pagelab" : $"pagelab {parse.CommandResult.Command.Name}";
        Console.Error.WriteLine($"pagelab: error: {CliOptions.Explain(CliOptions.FirstError(parse))}");
        Console.Error.WriteLine($"pagelab: see '{command} --help'");
        return ExitCodes.Usage;
    }

    /// <summary>Runs a command body; an exception becomes its message on one stderr line: exit code 2 for bad
    /// input (<see cref="UsageException"/>, <see cref="ScenarioException"/>), 1 for anything else.</summary>
    internal static int Guarded(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (UsageException e)
        {
            return Usage(e.Message);
        }
        catch (ScenarioException e)
        {
            return Usage(e.Message);
        }
        catch (Exception e)
        {
            return Fail(Descriptors.Explain(e) ?? PlainMessage(e));
        }
    }

    /// <summary>Reports a failure on one stderr line; returns exit code 1.</summary>
    internal static int Fail(string message)
    {
        WriteError(message);
        return ExitCodes.Failed;
    }

    /// <summary>Reports bad input on one stderr line; returns exit code 2.</summary>
    internal static int Usage(string message)
    {
        WriteError(message);
        return ExitCodes.Usage;
    }

    // The last thing a failing command does must not fail itself: a report that cannot be written (stderr
    // closed, no descriptor left) is dropped, and the exit code still tells the failure.
    private static void WriteError(string message)
    {
        string line = $"pagelab: error: {OneLine(message)}";
        try
        {
            Console.Error.WriteLine(line);
        }
        catch (Exception)
        {
            // The console could not initialise (no descriptor left for what it loads): write the bytes to fd 2
            // directly, which needs nothing new; if even that fails there is nowhere left to say it.
            Descriptors.WriteStderr(line + "\n");
        }
    }

    /// <summary>Loads now what reporting an error needs later. The console initialises itself (terminfo, an
    /// assembly file) on its first write, which needs free file descriptors; a run that used them all up
    /// (a scenario of many VMs under a low `ulimit -n`) could then not say why it failed and aborted (134).</summary>
    private static void PrepareErrorPath()
    {
        try
        {
            // A zero-byte write initialises the console without printing anything (the stream is a dup of fd 2).
            Console.OpenStandardError().Write([], 0, 0);
            _ = Console.Error.Encoding;
            // Exceptions for OS errors live in Microsoft.Win32.Primitives; load it while a descriptor is free.
            _ = new System.ComponentModel.Win32Exception(24).Message;
            _ = OneLine(PlainMessage(new IOException("x")));
            Descriptors.Prepare();
        }
        catch (Exception)
        {
            // Best effort: without it only the error path under descriptor exhaustion is at risk.
        }
    }

    private static string OneLine(string message) =>
        string.Join(' ', message.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries));

    /// <summary>An exception's message without what .NET appends for programmers: " (Parameter 'x')" and
    /// "Actual value was v." of argument exceptions.</summary>
    internal static string PlainMessage(Exception e)
    {
        string message = e.Message;
        if (e is ArgumentOutOfRangeException { ActualValue: not null } range)
            message = message.Replace($"Actual value was {range.ActualValue}.", "");
        if (e is ArgumentException { ParamName: string name })
            message = message.Replace($" (Parameter '{name}')", "");
        return message.Trim();
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
