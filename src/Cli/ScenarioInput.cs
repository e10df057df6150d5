// The scenario file a command was given: refused in plain words when it is missing, a directory or
// unreadable, then loaded and checked by Scenario.Load (which names the key and value of any mistake).
using System.Text.Json;
using System.Text.Json.Nodes;
using PageLab.Lab.Scenarios;

namespace PageLab.Cli;

internal static class ScenarioInput
{
    /// <summary>The checked scenario in <paramref name="path"/>; <see cref="UsageException"/> or
    /// <see cref="ScenarioException"/> (both exit code 2) when it cannot be used.</summary>
    public static Scenario Load(string path) => Load(path, []);

    /// <summary>The scenario in <paramref name="path"/> (the built-in one when null) with <paramref name="settings"/>
    /// applied to its JSON before it is checked; errors after a setting name the file "with --set".</summary>
    public static Scenario Load(string? path, IReadOnlyList<ScenarioSetting> settings, string option = "--set")
    {
        string text = path is null ? Scenario.Default.ToJson() : Read(path);
        string source = path is null ? "built-in scenario" : Path.GetFullPath(path);
        if (settings.Count == 0) return Scenario.Parse(text, source);
        JsonNode root;
        try
        {
            root = JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true, AllowDuplicateProperties = false })
                   ?? throw new ScenarioException(source, "$", "the file holds no scenario (null)");
        }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException)
        {
            // Malformed JSON or a duplicate key: the file's own check says where, with line and column.
            Scenario.Parse(text, source);
            throw;
        }
        ScenarioSettings.Apply(root, settings, option);
        return Scenario.Parse(root.ToJsonString(), $"{source} with {string.Join(' ', settings.Select(s => $"{option} {s}"))}",
                              path is null ? null : Path.GetDirectoryName(source));
    }

    /// <summary>Largest scenario file read (a scenario of thousands of VMs is well under it).</summary>
    internal const long MaxBytes = 64L * 1024 * 1024;

    private static string Read(string path)
    {
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new UsageException($"scenario file {path}: is a directory, not a JSON file (pagelab run --print-default prints one)");
        if (!File.Exists(full)) throw new UsageException($"scenario file {path}: does not exist");
        try
        {
            // Read at most the limit and one byte more: a device that never ends (/dev/zero, /dev/urandom) is
            // refused after that much, while a pipe (`run <(...)`) still works.
            using var stream = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16);
            var bytes = new MemoryStream();
            var buffer = new byte[1 << 16];
            for (int n; (n = stream.Read(buffer, 0, (int)Math.Min(buffer.Length, MaxBytes + 1 - bytes.Length))) > 0 && bytes.Length <= MaxBytes;)
                bytes.Write(buffer, 0, n);
            if (bytes.Length > MaxBytes)
                throw new UsageException($"scenario file {path}: is larger than a scenario's limit of {Program.Bytes(MaxBytes)} (a device that never ends?); give a JSON file");
            string text = new System.Text.UTF8Encoding(false).GetString(bytes.GetBuffer(), 0, (int)bytes.Length).TrimStart('\uFEFF');
            if (text.Trim().Length == 0) throw new UsageException($"scenario file {path}: the file is empty (pagelab run --print-default prints a scenario to start from)");
            return text;
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
