// `--set key=value` (and a sweep's grid keys): a dotted path into the scenario's JSON (`idleTax`,
// `vms[1].shares`, `vms[0].workload.pages`) given a value, before the scenario is checked as a file would be.
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace PageLab.Cli;

/// <summary>One setting: a key path and the JSON value to put there.</summary>
internal sealed record ScenarioSetting(string Key, JsonNode? Value, string Text)
{
    public override string ToString() => $"{Key}={Text}";
}

internal static partial class ScenarioSettings
{
    private const string PathHelp = "names separated by dots, list indexes in brackets, e.g. vms[1].shares";

    /// <summary>Parses "key=value". The value is JSON when it reads as JSON (2000, 0.5, true, null, "text",
    /// [1,2]), else the text itself (a name).</summary>
    public static ScenarioSetting Parse(string option, string raw)
    {
        int eq = raw.IndexOf('=');
        if (eq <= 0) throw new UsageException($"{option} '{raw}': expected key=value (e.g. idleTax=0.5 or vms[1].shares=2000)");
        string key = raw[..eq].Trim(), text = raw[(eq + 1)..];
        Segments(option, key, raw);
        return new ScenarioSetting(key, Value(text), text);
    }

    /// <summary>Refuses <paramref name="key"/> when it is not a key path, naming <paramref name="context"/>.</summary>
    public static void CheckKey(string context, string key) => Segments(context, key, key);

    /// <summary>The JSON value of a setting's text: JSON when it parses as JSON, else a string.</summary>
    public static JsonNode? Value(string text)
    {
        try
        {
            return JsonNode.Parse(text);
        }
        catch (JsonException)
        {
            return JsonValue.Create(text);
        }
    }

    /// <summary>The key's parts: property names (string) and list indexes (int).</summary>
    private static List<object> Segments(string option, string key, string raw)
    {
        var parts = new List<object>();
        foreach (string dotted in key.Split('.'))
        {
            Match m = Segment().Match(dotted);
            if (!m.Success) throw new UsageException($"{option} '{raw}': '{key}' is not a key path ({PathHelp})");
            parts.Add(m.Groups["name"].Value);
            foreach (Capture c in m.Groups["index"].Captures)
            {
                if (!int.TryParse(c.Value, out int i)) throw new UsageException($"{option} '{raw}': index [{c.Value}] is too large");
                parts.Add(i);
            }
        }
        return parts;
    }

    /// <summary>Applies <paramref name="settings"/> in order to the scenario JSON <paramref name="root"/>;
    /// a path through something that is not there, or not an object or list, is refused naming it.</summary>
    public static void Apply(JsonNode root, IEnumerable<ScenarioSetting> settings, string option = "--set")
    {
        foreach (ScenarioSetting s in settings)
        {
            List<object> parts = Segments(option, s.Key, s.ToString());
            JsonNode node = root;
            string at = "";
            for (int p = 0; p < parts.Count; p++)
            {
                bool last = p == parts.Count - 1;
                object part = parts[p];
                string here = part is int i ? $"{at}[{i}]" : at.Length == 0 ? (string)part : $"{at}.{part}";
                if (part is string name)
                {
                    if (node is not JsonObject obj) throw new UsageException($"{option} {s}: {Describe(at)} is {Kind(node)}, not an object with keys");
                    if (last)
                    {
                        obj[name] = s.Value?.DeepClone();
                        break;
                    }
                    JsonNode? next = obj[name];
                    if (next is null)
                    {
                        // A missing object on the way is created (e.g. a VM's workload); a list is not guessed.
                        if (parts[p + 1] is int) throw new UsageException($"{option} {s}: {here} is not in the scenario, so it has no entries");
                        obj[name] = next = new JsonObject();
                    }
                    node = next;
                }
                else
                {
                    int index = (int)part;
                    if (node is not JsonArray list) throw new UsageException($"{option} {s}: {Describe(at)} is {Kind(node)}, not a list");
                    if (index >= list.Count)
                        throw new UsageException($"{option} {s}: {at} has {list.Count} entr{(list.Count == 1 ? "y" : "ies")} (indexes 0 to {list.Count - 1}), no [{index}]");
                    if (last)
                    {
                        list[index] = s.Value?.DeepClone();
                        break;
                    }
                    node = list[index] ?? throw new UsageException($"{option} {s}: {here} is null, not an object or list");
                }
                at = here;
            }
        }
    }

    private static string Describe(string at) => at.Length == 0 ? "the scenario" : at;

    private static string Kind(JsonNode node) => node.GetValueKind() switch
    {
        JsonValueKind.Number => $"a number ({node.ToJsonString()})",
        JsonValueKind.String => $"a string ({node.ToJsonString()})",
        JsonValueKind.True or JsonValueKind.False => $"true or false ({node.ToJsonString()})",
        JsonValueKind.Array => "a list",
        JsonValueKind.Object => "an object",
        _ => "null",
    };

    [GeneratedRegex(@"^(?<name>[A-Za-z_][A-Za-z0-9_]*)(\[(?<index>[0-9]+)\])*$")]
    private static partial Regex Segment();
}
