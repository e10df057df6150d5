// The event trace of a run: every RunEvent as one line of JSON (JSON lines), in the order it happened,
// for analysis or to run the scenario again (the first line holds the scenario and its seed).
using System.Text;
using PageLab.Lab.Scenarios;

namespace PageLab.Lab.Observation;

/// <summary>Writes a run's events to a file, one JSON object per line. Only whole lines ever reach the file:
/// lines are collected in memory and written with one unbuffered write at the end of every tick (or when
/// 64 KiB are waiting), so a process stopped at any moment leaves a file of whole lines.</summary>
public sealed class RunTraceWriter : IDisposable
{
    private const int FlushBytes = 64 * 1024;
    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false);

    private readonly FileStream _file;
    private readonly ScenarioRunner _runner;
    private readonly Lock _lock = new();   // one writer at a time: the run, or Abandon on the way out
    private byte[] _pending = new byte[FlushBytes * 2];
    private int _pendingBytes;
    private bool _closed;

    /// <summary>Writes every event <paramref name="runner"/> raises from now on to <paramref name="path"/>
    /// (created or truncated). Attach before <see cref="ScenarioRunner.Boot"/> to get the whole run.</summary>
    public RunTraceWriter(ScenarioRunner runner, string path)
    {
        string? dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        Path = path;
        // bufferSize 0: no FileStream buffer, so each Write is one write(2) of whole lines.
        _file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, bufferSize: 0);
        _runner = runner;
        _runner.EventRaised += Write;
        _runner.Ticked += FlushAtTick;
    }

    public string Path { get; }
    public long EventsWritten { get; private set; }

    /// <summary>Why the file could not be written (e.g. "No space left on device"), null while all is well.
    /// After a failure the writer drops further events; the run decides whether to go on.</summary>
    public string? Error { get; private set; }

    private void Write(RunEvent e)
    {
        string line = e.ToJson() + "\n";
        lock (_lock)
        {
            if (_closed || Error is not null) return;
            int bytes = Utf8.GetByteCount(line);
            if (_pendingBytes + bytes > _pending.Length) Array.Resize(ref _pending, Math.Max(_pending.Length * 2, _pendingBytes + bytes));
            _pendingBytes += Utf8.GetBytes(line, 0, line.Length, _pending, _pendingBytes);
            EventsWritten++;
            if (_pendingBytes >= FlushBytes) FlushLocked();
        }
    }

    private void FlushAtTick(TickSnapshot _) => Flush();

    /// <summary>Writes the lines collected so far.</summary>
    public void Flush()
    {
        lock (_lock) FlushLocked();
    }

    private void FlushLocked()
    {
        if (_pendingBytes == 0 || _closed || Error is not null) return;
        try
        {
            _file.Write(_pending, 0, _pendingBytes);
        }
        catch (IOException e)
        {
            Error = e.Message.Replace($" : '{System.IO.Path.GetFullPath(Path)}'", "").Trim().TrimEnd('.');
        }
        _pendingBytes = 0;
    }

    /// <summary>For a process about to exit at once (from another thread): writes the whole lines collected
    /// so far and closes the file; events raised afterwards are dropped, so no partial line can follow.</summary>
    public void Abandon()
    {
        lock (_lock)
        {
            FlushLocked();
            _closed = true;
            _file.Dispose();
        }
    }

    /// <summary>The events of a trace file, in order.</summary>
    public static List<RunEvent> Read(string path) =>
        File.ReadLines(path).Where(l => l.Length > 0).Select(RunEvent.FromJson).ToList();

    /// <summary>Writes what is left and closes the file; a failure is in <see cref="Error"/>, not thrown.</summary>
    public void Dispose()
    {
        _runner.EventRaised -= Write;
        _runner.Ticked -= FlushAtTick;
        lock (_lock)
        {
            FlushLocked();
            _closed = true;
            _file.Dispose();
        }
    }
}
