// Where output for people goes: stdout normally; stderr when stdout carries data (`run --json -`), so a
// script reading stdout gets the JSON alone. Restores the console when disposed.
using Spectre.Console;

namespace PageLab.Cli;

internal sealed class HumanOutput : IDisposable
{
    private readonly TextWriter _stdout;
    private readonly IAnsiConsole? _previous;

    private HumanOutput(TextWriter stdout, IAnsiConsole? previous)
    {
        _stdout = stdout;
        _previous = previous;
    }

    /// <summary>The real stdout, for data.</summary>
    public TextWriter Stdout => _stdout;

    /// <summary>Everything for people (tables, progress, success lines) unchanged, on stdout.</summary>
    public static HumanOutput Unchanged() => new(Console.Out, null);

    /// <summary>Tables, progress and success lines to stderr until disposed; <see cref="Stdout"/> keeps stdout.</summary>
    public static HumanOutput ToStderr()
    {
        var output = new HumanOutput(Console.Out, AnsiConsole.Console);
        AnsiConsole.Console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        Terminal.Apply(Console.IsErrorRedirected); // as Program does for stdout
        Console.SetOut(Console.Error);
        return output;
    }

    public void Dispose()
    {
        if (_previous is null) return;
        Console.SetOut(_stdout);
        AnsiConsole.Console = _previous;
    }
}
