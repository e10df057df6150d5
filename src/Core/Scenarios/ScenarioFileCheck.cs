// The structural check of a scenario file, before it is deserialized: every key must be one the scenario
// records know, and every value of the type they expect; the error names the file, key and value.
using System.Reflection;
using System.Text.Json;

namespace PageLab.Core.Scenarios;

internal static class ScenarioFileCheck
{
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

    private static void CheckValue(string file, string key, JsonElement value, Type type)
    {
        Type? nullableOf = Nullable.GetUnderlyingType(type);
        if (value.ValueKind == JsonValueKind.Null)
        {
            if (nullableOf is null) Bad(file, key, value, Expected(type));
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
        else if (value.ValueKind == JsonValueKind.Object)
        {
            Dictionary<string, PropertyInfo> known = Keys(type);
            foreach (JsonProperty p in value.EnumerateObject())
            {
                string at = key == "$" ? p.Name : $"{key}.{p.Name}";
                if (!known.TryGetValue(p.Name, out PropertyInfo? prop))
                    throw new ScenarioException(file, at, $"unknown key '{p.Name}' (known here: {string.Join(", ", known.Keys)})");
                CheckValue(file, at, p.Value, prop.PropertyType);
            }
        }
    }

    // The JSON keys of a scenario record: its settable public properties, camelCase, as the serializer maps them.
    private static Dictionary<string, PropertyInfo> Keys(Type type) =>
        type.GetProperties(BindingFlags.Public | BindingFlags.Instance)
            .Where(p => p.CanWrite)
            .ToDictionary(p => JsonNamingPolicy.CamelCase.ConvertName(p.Name));

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
