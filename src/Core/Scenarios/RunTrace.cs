// The event trace of a run: every RunEvent as one line of JSON (JSON lines), in the order it happened,
// for analysis or to run the scenario again (the first line holds the scenario and its seed).
using System.Text;

namespace PageLab.Core.Scenarios;

public sealed class RunTraceWriter : IDisposable
{
    private readonly TextWriter _writer;
    private readonly ScenarioRunner _runner;

    /// <summary>Writes every event <paramref name="runner"/> raises from now on to <paramref name="path"/>
    /// (created or truncated). Attach before <see cref="ScenarioRunner.Boot"/> to get the whole run.</summary>
    public RunTraceWriter(ScenarioRunner runner, string path)
    {
        string? dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path));
        if (dir is not null) Directory.CreateDirectory(dir);
        Path = path;
        _writer = new StreamWriter(path, append: false, new UTF8Encoding(encoderShouldEmitUTF8Identifier: false)) { NewLine = "\n" };
        _runner = runner;
        _runner.EventRaised += Write;
    }

    public string Path { get; }
    public long EventsWritten { get; private set; }

    private void Write(RunEvent e)
    {
        _writer.WriteLine(e.ToJson());
        EventsWritten++;
    }

    /// <summary>The events of a trace file, in order.</summary>
    public static List<RunEvent> Read(string path) =>
        File.ReadLines(path).Where(l => l.Length > 0).Select(RunEvent.FromJson).ToList();

    public void Dispose()
    {
        _runner.EventRaised -= Write;
        _writer.Dispose();
    }
}
