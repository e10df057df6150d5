// A sweep file (`pagelab sweep SWEEP.json`): a scenario, a grid of scenario keys and their values, a seed
// count and fixed settings; read and checked here, expanded into one run per grid point and seed.
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using PageLab.Lab.Scenarios;

namespace PageLab.Cli;

/// <summary>One run of a sweep: the grid point's settings, the seed, and a stable id (a hash of the
/// scenario, the settings and the seed) that names its summary file, so a resumed sweep finds it.</summary>
internal sealed record SweepRun(int Index, IReadOnlyList<ScenarioSetting> Point, int Seed, string Id)
{
    public string Describe() => string.Join(" ", Point.Select(p => p.ToString()).Append($"seed={Seed}"));
}

internal sealed class SweepSpec
{
    /// <summary>Most runs one sweep may have (grid points times seeds).</summary>
    public const int MaxRuns = 100_000;

    private static readonly string[] Keys = ["scenario", "grid", "seeds", "set"];

    public required string File { get; init; }
    /// <summary>Full path of the scenario file, or null for the built-in scenario.</summary>
    public string? Scenario { get; init; }
    /// <summary>Swept keys in the file's order, each with its values.</summary>
    public required List<(string Key, List<JsonNode?> Values)> Grid { get; init; }
    public required List<int> Seeds { get; init; }
    /// <summary>Settings every run gets (before the grid's).</summary>
    public required List<ScenarioSetting> Set { get; init; }

    // One text per distinct value: numbers by their value (0 and 0.0 are one), anything else as JSON.
    private static string Canonical(JsonNode? v) =>
        v is JsonValue n && n.GetValueKind() == JsonValueKind.Number && n.TryGetValue(out double d)
            ? d.ToString("R", System.Globalization.CultureInfo.InvariantCulture)
            : v?.ToJsonString() ?? "null";

    /// <summary>Reads and checks <paramref name="path"/>; <see cref="UsageException"/> naming the file, key and value.</summary>
    public static SweepSpec Load(string path)
    {
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new UsageException($"sweep file {path}: is a directory, not a JSON file");
        if (!System.IO.File.Exists(full)) throw new UsageException($"sweep file {path}: does not exist");
        JsonNode? root;
        string text = System.IO.File.ReadAllText(full);
        if (text.Trim().Length == 0) throw new UsageException($"sweep file {path}: the file is empty; give a JSON object with scenario, grid, seeds and set (docs/sweep.md)");
        try
        {
            root = JsonNode.Parse(text, documentOptions: new JsonDocumentOptions
            {
                CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true, AllowDuplicateProperties = false,
            });
        }
        catch (JsonException e)
        {
            if (Duplicate(text) is (string key, int dupLine)) throw new UsageException($"sweep file {path}: line {dupLine}: the key '{key}' is given twice");
            string where = e.LineNumber is long line ? $"line {line + 1}, column {(e.BytePositionInLine ?? 0) + 1}: " : "";
            throw new UsageException($"sweep file {path}: {where}{FirstSentence(e.Message)}");
        }
        void Fail(string key, string why) => throw new UsageException($"sweep file {path}: {key}: {why}");
        if (root is not JsonObject obj) throw new UsageException($"sweep file {path}: must be a JSON object with scenario, grid, seeds and set");
        foreach ((string key, _) in obj)
            if (!Keys.Contains(key)) Fail(key, $"unknown key '{key}' (known: {string.Join(", ", Keys)})");

        string? scenario = null;
        if (obj["scenario"] is JsonNode s)
        {
            if (s.GetValueKind() != JsonValueKind.String) Fail("scenario", $"{s.ToJsonString()} is not a file name (a string, relative to the sweep file)");
            scenario = Path.GetFullPath(Path.Combine(Path.GetDirectoryName(full)!, s.GetValue<string>()));
        }

        if (obj["grid"] is not JsonObject gridObj || gridObj.Count == 0)
            throw new UsageException($"sweep file {path}: grid: required, an object of scenario keys and value lists, e.g. {{ \"idleTax\": [0, 0.5] }}");
        var grid = new List<(string, List<JsonNode?>)>();
        foreach ((string key, JsonNode? values) in gridObj)
        {
            if (key is "seed") Fail("grid.seed", "give seeds (a count or a list) instead of sweeping seed");
            if (values is not JsonArray list || list.Count == 0) Fail($"grid.{key}", $"{values?.ToJsonString() ?? "null"} is not a non-empty list of values");
            ScenarioSettings.CheckKey($"sweep file {path}: grid key", key);
            // A value given twice (0 and 0, or 0 and 0.0) is one run under two rows: refused, as a seed given twice is.
            var seen = new HashSet<string>();
            foreach (JsonNode? v in (JsonArray)values!)
                if (!seen.Add(Canonical(v))) Fail($"grid.{key}", $"the value {v?.ToJsonString() ?? "null"} is given twice");
            grid.Add((key, ((JsonArray)values!).Select(v => v?.DeepClone()).ToList()));
        }

        List<int> seeds;
        switch (obj["seeds"])
        {
            case null:
                seeds = [1];
                break;
            case JsonValue v when v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out int count):
                if (count is < 1 or > 1000) Fail("seeds", $"{count} is out of range (accepted: a count from 1 to 1000, or a list of seeds)");
                seeds = Enumerable.Range(1, count).ToList();
                break;
            case JsonArray list when list.Count > 0 && list.All(x => x is JsonValue xv && xv.GetValueKind() == JsonValueKind.Number && xv.TryGetValue(out int _)):
                seeds = list.Select(x => x!.GetValue<int>()).ToList();
                if (seeds.Distinct().Count() != seeds.Count) Fail("seeds", "a seed is given twice");
                break;
            case var other:
                Fail("seeds", $"{other!.ToJsonString()} is neither a count from 1 to 1000 nor a non-empty list of whole numbers");
                return null!;
        }

        var set = new List<ScenarioSetting>();
        if (obj["set"] is JsonNode setNode)
        {
            if (setNode is not JsonObject setObj) throw new UsageException($"sweep file {path}: set: must be an object of scenario keys and values");
            foreach ((string key, JsonNode? value) in setObj)
            {
                if (gridObj.ContainsKey(key)) Fail($"set.{key}", "is also in grid; give it in one of the two");
                if (key is "seed") Fail("set.seed", "give seeds instead");
                ScenarioSettings.CheckKey($"sweep file {path}: set key", key);
                set.Add(new ScenarioSetting(key, value?.DeepClone(), value?.ToJsonString() ?? "null"));
            }
        }
        long runs = grid.Aggregate(1L, (n, g) => n * g.Item2.Count) * seeds.Count;
        if (runs > MaxRuns) throw new UsageException($"sweep file {path}: {runs} runs (grid points x seeds), more than the limit of {MaxRuns}");
        return new SweepSpec { File = full, Scenario = scenario, Grid = grid, Seeds = seeds, Set = set };
    }

    /// <summary>Every run: grid points in order (the last key varying fastest), each with every seed.</summary>
    public List<SweepRun> Runs()
    {
        var points = new List<List<ScenarioSetting>> { new() };
        foreach ((string key, List<JsonNode?> values) in Grid)
            points = points.SelectMany(p => values.Select(v => new List<ScenarioSetting>(p) { new(key, v?.DeepClone(), v?.ToJsonString() ?? "null") })).ToList();
        var runs = new List<SweepRun>();
        foreach (List<ScenarioSetting> point in points)
            foreach (int seed in Seeds)
                runs.Add(new SweepRun(runs.Count, point, seed, Id(point, seed)));
        return runs;
    }

    /// <summary>The settings of <paramref name="run"/> in the order they apply: the file's set, then the point's.</summary>
    public List<ScenarioSetting> SettingsOf(SweepRun run) => [.. Set, .. run.Point];

    // The run's id: a hash of what decides its result (scenario file, settings, seed), 16 hex digits.
    private string Id(List<ScenarioSetting> point, int seed)
    {
        string canonical = $"{Scenario ?? "built-in"}\n{string.Join("\n", Set.Concat(point).Select(s => s.ToString()))}\nseed={seed}";
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(canonical)))[..16];
    }

    // The first key given twice in one object, and its (1-based) line; null when there is none.
    private static (string Key, int Line)? Duplicate(string text)
    {
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        var reader = new Utf8JsonReader(utf8, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        var open = new Stack<HashSet<string>?>();
        try
        {
            while (reader.Read())
            {
                switch (reader.TokenType)
                {
                    case JsonTokenType.StartObject: open.Push(new HashSet<string>()); break;
                    case JsonTokenType.StartArray: open.Push(null); break;
                    case JsonTokenType.EndObject or JsonTokenType.EndArray: open.Pop(); break;
                    case JsonTokenType.PropertyName when open.Peek() is HashSet<string> keys && !keys.Add(reader.GetString()!):
                        return (reader.GetString()!, 1 + utf8.AsSpan(0, (int)reader.TokenStartIndex).Count((byte)'\n'));
                }
            }
        }
        catch (JsonException)
        {
            // Malformed: the parser's own message says where.
        }
        return null;
    }

    private static string FirstSentence(string message)
    {
        int cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        return (cut > 0 ? message[..cut] : message).Trim();
    }

    /// <summary>A column name for a key path: '.', '[' and ']' become '_' (vms[1].shares: vms_1_shares), so
    /// Parquet readers and data frames take it as one plain name.</summary>
    public static string ColumnName(string key) => key.Replace("].", "_").Replace('[', '_').Replace(']', '_').Replace('.', '_').TrimEnd('_');
}
