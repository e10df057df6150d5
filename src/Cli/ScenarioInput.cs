// The scenario file a command was given: refused in plain words when it is missing, a directory or
// unreadable, then loaded and checked by Scenario.Load (which names the key and value of any mistake).
using PageLab.Core.Scenarios;

namespace PageLab.Cli;

internal static class ScenarioInput
{
    /// <summary>The checked scenario in <paramref name="path"/>; <see cref="UsageException"/> or
    /// <see cref="ScenarioException"/> (both exit code 2) when it cannot be used.</summary>
    public static Scenario Load(string path)
    {
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new UsageException($"scenario file {path}: is a directory, not a JSON file (pagelab run --print-default prints one)");
        if (!File.Exists(full)) throw new UsageException($"scenario file {path}: does not exist");
        try
        {
            return Scenario.Load(full);
        }
        catch (UnauthorizedAccessException)
        {
            throw new UsageException($"scenario file {path}: cannot be read (permission denied)");
        }
        catch (IOException e)
        {
            throw new UsageException($"scenario file {path}: cannot be read ({OutputPaths.Reason(e, full)})");
        }
    }
}
