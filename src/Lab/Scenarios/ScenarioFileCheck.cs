// The structural check of a scenario file, before it is deserialized: every key must be one the scenario
// records know, given once, of the type they expect, and required keys present; errors name file, key, value.
using System.Reflection;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using PageLab.Lab.Workloads;

namespace PageLab.Lab.Scenarios;

internal static partial class ScenarioFileCheck
{
    // Keys a file must give (no default makes sense), with what they accept, per scenario record.
    private static readonly Dictionary<Type, (string Key, string Accepts)[]> Required = new()
    {
        [typeof(Scenario)] =
        [
            ("hostPages", $"host pages the scheduler shares out, 1 to {Scenario.MaxHostPages}"),
            ("vms", $"a list of 1 to {Scenario.MaxVms} VMs"),
        ],
        [typeof(VmSpec)] =
        [
            ("name", "a unique name"),
            ("pages", $"guest pages, {Scenario.MinVmPages} to {Scenario.MaxVmPages}"),
            ("workload", "an object with at least pages"),
        ],
        [typeof(ImageSpec)] = [("name", "the image's name (VMs booted from one name hold the same pages)"), ("pages", "1 to half the VM's pages")],
        [typeof(InjectionSpec)] = [("tick", "1 to ticks"), ("vm", "a VM's name")],
    };

    private static readonly JsonDocumentOptions Options = new()
    {
        CommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
    };

    /// <summary>Throws <see cref="ScenarioException"/> at the first unknown key or badly typed value;
    /// malformed JSON throws the parser's <see cref="JsonException"/> (with its line and column).</summary>
    public static void Check(string file, string json)
    {
        using JsonDocument doc = JsonDocument.Parse(json, Options);
        CheckValue(file, "$", doc.RootElement, typeof(Scenario));
    }

    private static readonly NullabilityInfoContext Nullability = new();

    /// <param name="nullable">The key is an optional object or string (a nullable reference): null means "off".</param>
    private static void CheckValue(string file, string key, JsonElement value, Type type, bool nullable = false)
    {
        Type? nullableOf = Nullable.GetUnderlyingType(type);
        if (value.ValueKind == JsonValueKind.Null)
        {
            if (nullableOf is null && !nullable) Bad(file, key, value, Expected(type));
            return;
        }
        type = nullableOf ?? type;
        bool ok = type switch
        {
            _ when type == typeof(ulong) => value.ValueKind == JsonValueKind.Number && value.TryGetUInt64(out _),
            _ when type == typeof(int) => value.ValueKind == JsonValueKind.Number && value.TryGetInt32(out _),
            _ when type == typeof(double) => value.ValueKind == JsonValueKind.Number && value.TryGetDouble(out _),
            _ when type == typeof(bool) => value.ValueKind is JsonValueKind.True or JsonValueKind.False,
            _ when type == typeof(string) => value.ValueKind == JsonValueKind.String,
            _ when ListItemType(type) is not null => value.ValueKind == JsonValueKind.Array,
            _ => value.ValueKind == JsonValueKind.Object,
        };
        if (!ok) Bad(file, key, value, Expected(type));
        if (ListItemType(type) is Type item)
        {
            int i = 0;
            foreach (JsonElement e in value.EnumerateArray()) CheckValue(file, $"{key}[{i++}]", e, item);
        }
        else if (value.ValueKind == JsonValueKind.Object && type == typeof(WorkloadSpec))
            CheckWorkload(file, key, value);
        else if (value.ValueKind == JsonValueKind.Object)
            CheckObject(file, key, value, Keys(type), Required.GetValueOrDefault(type, []));
    }

    // A workload's keys are its kind's: "kind" (a registered name) and the kind's settings record.
    private static void CheckWorkload(string file, string key, JsonElement value)
    {
        string kindName = WorkloadKinds.DefaultKind;
        if (value.TryGetProperty("kind", out JsonElement k))
        {
            if (k.ValueKind != JsonValueKind.String) Bad(file, $"{key}.kind", k, "a string");
            kindName = k.GetString()!;
        }
        IWorkloadKind kind = WorkloadKinds.Find(kindName) ?? throw new ScenarioException(file, $"{key}.kind", WorkloadKinds.Unknown(kindName));
        var known = new Dictionary<string, PropertyInfo?> { ["kind"] = null };
        foreach ((string name, PropertyInfo? prop) in Keys(kind.SettingsType)) known[name] = prop;
        CheckObject(file, key, value, known, kind.Required);
    }

    private static void CheckObject(string file, string key, JsonElement value, IReadOnlyDictionary<string, PropertyInfo?> known,
                                    IReadOnlyList<(string Key, string Accepts)> required)
    {
        var seen = new HashSet<string>();
        foreach (JsonProperty p in value.EnumerateObject())
        {
            string at = key == "$" ? p.Name : $"{key}.{p.Name}";
            if (!known.TryGetValue(p.Name, out PropertyInfo? prop))
                throw new ScenarioException(file, at, $"unknown key '{p.Name}' (known here: {string.Join(", ", known.Keys)})");
            // The parser would keep the last value silently; a key given twice is a mistake in one of them.
            if (!seen.Add(p.Name)) throw new ScenarioException(file, at, $"the key '{p.Name}' is given twice in one object; keep one");
            if (prop is null) continue;                        // checked by its owner (a workload's kind)
            bool optional;
            lock (Nullability) optional = Nullability.Create(prop).WriteState == NullabilityState.Nullable;
            CheckValue(file, at, p.Value, prop.PropertyType, optional);
        }
        foreach ((string name, string accepts) in required)
            if (!seen.Contains(name))
                throw new ScenarioException(file, key == "$" ? name : $"{key}.{name}", $"required, but missing ({accepts})");
    }

    /// <summary>A JSON error in plain words: "line 4, column 1: '}' is an invalid start of a value." with the
    /// line and column 1-based (the parser counts from 0, and the column in bytes of UTF-8).</summary>
    internal static string Describe(JsonException e, string json)
    {
        string why = ParserPosition().Replace(e.Message, "").Trim();
        if (why.Contains("could not be converted to", StringComparison.Ordinal)) why = "has the wrong type";
        if (e.LineNumber is not long line || e.BytePositionInLine is not long bytes) return why;
        string[] lines = json.Split('\n');
        string text = line < lines.Length ? lines[line] : "";
        byte[] utf8 = Encoding.UTF8.GetBytes(text);
        int column = Encoding.UTF8.GetString(utf8, 0, (int)Math.Min(bytes, utf8.Length)).Length + 1;
        return $"line {line + 1}, column {column}: {why}";
    }

    // What System.Text.Json appends to its messages: " Path: $.x | LineNumber: 3 | BytePositionInLine: 0."
    [GeneratedRegex(@"\s*(Path: \S* \| )?LineNumber: \d+ \| BytePositionInLine: \d+\.?\s*$")]
    private static partial Regex ParserPosition();

    // The JSON keys of a scenario record: its settable public properties, camelCase, as the serializer maps them.
    private static Dictionary<string, PropertyInfo?> Keys(Type type) =>
        type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.CanWrite && p.CanRead)
            .ToDictionary(p => JsonNamingPolicy.CamelCase.ConvertName(p.Name), p => (PropertyInfo?)p);

    private static Type? ListItemType(Type type) =>
        type.IsGenericType && type.GetGenericTypeDefinition() == typeof(List<>) ? type.GetGenericArguments()[0] : null;

    private static string Expected(Type type) => type switch
    {
        _ when type == typeof(ulong) => $"a whole number from 0 to {ulong.MaxValue}",
        _ when type == typeof(int) => $"a whole number from {int.MinValue} to {int.MaxValue}",
        _ when type == typeof(double) => "a number",
        _ when type == typeof(bool) => "true or false",
        _ when type == typeof(string) => "a string",
        _ when ListItemType(type) is not null => "a list",
        _ => "an object",
    };

    private static void Bad(string file, string key, JsonElement value, string expected)
    {
        string raw = value.GetRawText();
        if (raw.Length > 40) raw = raw[..37] + "...";
        throw new ScenarioException(file, key, $"{raw} is not {expected}");
    }
}
