// Ctrl-C (SIGINT) and SIGTERM while a command runs: the first asks it to stop at the next tick boundary
// and finish its outputs; a second exits at once, after quick last actions (trace cut at a whole line).
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace PageLab.Cli;

internal sealed class Interrupts : IDisposable
{
    private readonly PosixSignalRegistration[] _registrations;
    private readonly List<Action> _lastActions = new();
    private long _firstAt;
    private volatile string? _signal;
    private int _exitCode;
    private readonly string _stopping;
    private readonly bool _firstExits;
    private readonly CancellationTokenSource _stop = new();

    /// <summary>A signal this soon after the first is the same one delivered twice, not a second Ctrl-C:
    /// `timeout -s INT` signals the child and then its process group, microseconds apart.</summary>
    internal static readonly TimeSpan Debounce = TimeSpan.FromMilliseconds(300);

    /// <summary>Takes over SIGINT and SIGTERM until disposed (the runtime's default is to exit at once);
    /// <paramref name="stopping"/> is what the first signal is answered with. With <paramref name="firstExits"/>
    /// (a command that cannot stop part way) the first signal already exits, after the last actions.</summary>
    public Interrupts(string stopping = "stopping after this tick", bool firstExits = false)
    {
        _stopping = stopping;
        _firstExits = firstExits;
        _registrations = [PosixSignalRegistration.Create(PosixSignal.SIGINT, Handle), PosixSignalRegistration.Create(PosixSignal.SIGTERM, Handle)];
    }

    /// <summary>True once a signal asked the command to stop.</summary>
    public bool Requested => _signal is not null;

    /// <summary>Cancelled by the first signal, for work that polls a token between its steps.</summary>
    public CancellationToken Stopping => _stop.Token;

    /// <summary>The first signal's name ("SIGINT", "SIGTERM"), null before any.</summary>
    public string? Signal => _signal;

    /// <summary>128 + the first signal's number: 130 for SIGINT, 143 for SIGTERM.</summary>
    public int ExitCode => Volatile.Read(ref _exitCode);

    /// <summary>Registers <paramref name="action"/> to run if a second signal makes the process exit at once
    /// (quick, on the signal's thread); disposing the result unregisters it.</summary>
    public IDisposable AtExitNow(Action action)
    {
        lock (_lastActions) _lastActions.Add(action);
        return new Unregister(this, action);
    }

    private void Handle(PosixSignalContext context)
    {
        context.Cancel = true; // the command decides when to exit
        (string name, int code) = context.Signal == PosixSignal.SIGTERM ? ("SIGTERM", ExitCodes.Sigterm) : ("SIGINT", ExitCodes.Sigint);
        long now = Stopwatch.GetTimestamp();
        if (Interlocked.CompareExchange(ref _firstAt, now, 0) == 0)
        {
            Volatile.Write(ref _exitCode, code);
            _signal = name;
            _stop.Cancel(); // no callbacks are registered on it: the work polls the token
            if (!_firstExits)
            {
                Console.Error.WriteLine($"pagelab: {name}: {_stopping} (send it again to exit at once)");
                return;
            }
            Console.Error.WriteLine($"pagelab: {name}: {_stopping}");
        }
        else if (Stopwatch.GetElapsedTime(Volatile.Read(ref _firstAt), now) < Debounce)
            return; // the first signal again, not a second Ctrl-C
        else
            Console.Error.WriteLine($"pagelab: {name} again: exiting at once");
        ExitNow(_firstExits ? ExitCode : code);
    }

    // Runs the last actions (newest first), shows the cursor and exits with code.
    private void ExitNow(int code)
    {
        Action[] actions;
        lock (_lastActions) actions = _lastActions.ToArray();
        foreach (Action a in actions.Reverse())
        {
            try
            {
                a();
            }
            catch (Exception e)
            {
                // On the way out every action gets its turn; one failing must not keep the others from running.
                Console.Error.WriteLine($"pagelab: while exiting: {Program.PlainMessage(e)}");
            }
        }
        ShowCursor();
        Environment.Exit(code);
    }

    /// <summary>Shows the terminal's cursor again (a live table hides it); nothing when output is redirected.</summary>
    internal static void ShowCursor()
    {
        if (Console.IsOutputRedirected) return;
        try
        {
            Console.Out.Write("\u001b[?25h\n");
            Console.Out.Flush();
        }
        catch (IOException)
        {
            // The terminal is gone (hung up): there is no cursor left to show.
        }
    }

    public void Dispose()
    {
        // _stop is not disposed: a handler already running may still cancel it (it holds no timer).
        foreach (PosixSignalRegistration r in _registrations) r.Dispose();
    }

    private sealed class Unregister(Interrupts owner, Action action) : IDisposable
    {
        public void Dispose()
        {
            lock (owner._lastActions) owner._lastActions.Remove(action);
        }
    }
}
