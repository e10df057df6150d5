// Runs the `pagelab` command for tests: in this process with the console captured (fast, for input checks),
// or as a child process (`dotnet exec pagelab.dll`) that a test can send signals to.
using System.Diagnostics;
using System.Text;

namespace PageLab.Tests;

internal sealed record CliResult(int Exit, string Out, string Err)
{
    public string[] ErrLines => Err.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}

internal static class CliHarness
{
    /// <summary>Text that means a .NET internal leaked into a message meant for people.</summary>
    public static readonly string[] DotNetLeaks =
        ["System.", "PageLab.Core", "PageLab.Cli", "Exception", "(Parameter '", "Actual value was", "LineNumber", "BytePositionInLine", "   at "];

    /// <summary>`pagelab args` in this process, stdout and stderr captured. Tests run one at a time (AssemblyInfo).</summary>
    public static CliResult InProcess(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        TextWriter oldOut = Console.Out, oldErr = Console.Error;
        try
        {
            Console.SetOut(stdout);
            Console.SetError(stderr);
            int exit = PageLab.Cli.Program.Main(args);
            return new CliResult(exit, stdout.ToString(), stderr.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }

    /// <summary>Where pagelab writes <paramref name="output"/> until it is whole (then renamed over it).</summary>
    public static string Partial(string output) =>
        Path.Combine(Path.GetDirectoryName(output)!, $".{Path.GetFileNameWithoutExtension(output)}.pagelab-partial{Path.GetExtension(output)}");

    /// <summary>The built `pagelab.dll` (copied next to the tests by the project reference).</summary>
    public static string Dll => Path.Combine(AppContext.BaseDirectory, "pagelab.dll");

    /// <summary>Starts `dotnet exec pagelab.dll args` in <paramref name="workingDirectory"/>, output redirected,
    /// its temporary files in <paramref name="tempDirectory"/> (TMPDIR).</summary>
    public static ChildCli Start(string workingDirectory, string tempDirectory, params string[] args) =>
        StartProgram("dotnet", workingDirectory, tempDirectory, ["exec", Dll, .. args]);

    /// <summary>As <see cref="Start"/>, with <paramref name="environment"/> added to the child's environment.</summary>
    public static ChildCli StartWith(IReadOnlyDictionary<string, string> environment, string workingDirectory, string tempDirectory, params string[] args) =>
        StartProgram("dotnet", workingDirectory, tempDirectory, ["exec", Dll, .. args], environment);

    /// <summary>Runs `pagelab args` as a child process to its end (at most <paramref name="timeoutS"/> seconds).</summary>
    public static CliResult Run(IReadOnlyDictionary<string, string> environment, string workingDirectory, int timeoutS, params string[] args)
    {
        // The Windows lane runs a published, self-contained test exe under Wine, with no `dotnet` to start pagelab.dll.
        if (!OperatingSystem.IsLinux()) Assert.Skip("starts pagelab as a child process with `dotnet exec` (Linux lane)");
        using ChildCli child = StartWith(environment, workingDirectory, workingDirectory, args);
        int exit = child.WaitForExit(TimeSpan.FromSeconds(timeoutS));
        return new CliResult(exit, child.Out, child.Err);
    }

    /// <summary>Starts <paramref name="program"/> with <paramref name="args"/>, output redirected, TMPDIR set.</summary>
    public static ChildCli StartProgram(string program, string workingDirectory, string tempDirectory, string[] args, IReadOnlyDictionary<string, string>? environment = null)
    {
        var info = new ProcessStartInfo(program)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.Environment["TMPDIR"] = tempDirectory;
        foreach ((string key, string value) in environment ?? new Dictionary<string, string>()) info.Environment[key] = value;
        foreach (string a in args) info.ArgumentList.Add(a);
        return new ChildCli(Process.Start(info) ?? throw new InvalidOperationException($"{program} did not start"));
    }
}

/// <summary>A running `pagelab` child: its output is collected as it comes; disposing kills it if still running.</summary>
internal sealed class ChildCli : IDisposable
{
    private readonly StringBuilder _out = new(), _err = new();

    public ChildCli(Process process)
    {
        Process = process;
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (_out) _out.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_err) _err.AppendLine(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    public Process Process { get; }
    public string Out { get { lock (_out) return _out.ToString(); } }
    public string Err { get { lock (_err) return _err.ToString(); } }

    /// <summary>Sends <paramref name="signal"/> (e.g. "INT", "TERM") with the `kill` command.</summary>
    public void Signal(string signal)
    {
        using var kill = Process.Start("kill", ["-s", signal, Process.Id.ToString()])!;
        kill.WaitForExit();
        Assert.Equal(0, kill.ExitCode);
    }

    /// <summary>Waits until <paramref name="ready"/> holds (polled every 20 ms) or the timeout passes.</summary>
    public bool WaitUntil(Func<bool> ready, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < timeout)
        {
            if (ready()) return true;
            if (Process.HasExited) return ready();
            Thread.Sleep(20);
        }
        return false;
    }

    /// <summary>The exit code, after waiting for the process and its output to end.</summary>
    public int WaitForExit(TimeSpan timeout)
    {
        if (!Process.WaitForExit(timeout)) throw new TimeoutException($"pagelab still running after {timeout.TotalSeconds} s; stderr: {Err}");
        Process.WaitForExit(); // drains the redirected output
        return Process.ExitCode;
    }

    public void Dispose()
    {
        if (!Process.HasExited) Process.Kill(entireProcessTree: true);
        Process.Dispose();
    }
}
