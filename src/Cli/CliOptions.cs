// Options that parse their own values, so every bad value is refused in one plain line naming the option,
// the value and what is accepted (never a .NET type name), and the parser's other errors said the same way.
using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;

namespace PageLab.Cli;

/// <summary>Policies a list option named, and the word after it when that named no policy.</summary>
internal sealed record PolicyListValue(string[] Policies, string? NotPolicies);

internal static partial class CliOptions
{
    // What each option accepts, to complete the parser's own messages (e.g. a value missing after the option).
    private static readonly ConditionalWeakTable<Option, string> Accepted = new();

    /// <summary>A whole-number option from <paramref name="min"/> to <paramref name="max"/> with a default.</summary>
    public static Option<int> Int(string name, string description, int min, int max, int @default)
    {
        var o = new Option<int>(name)
        {
            Description = $"{description} ({RangeText(min, max)}; default {@default})",
            DefaultValueFactory = _ => @default,
            CustomParser = r => ParseInt(r, name, min, max) ?? @default,
        };
        Accepted.AddOrUpdate(o, RangeText(min, max));
        return o;
    }

    /// <summary>A whole-number option from <paramref name="min"/> to <paramref name="max"/>; null when not given.</summary>
    public static Option<int?> OptionalInt(string name, string description, int min, int max)
    {
        var o = new Option<int?>(name)
        {
            Description = $"{description} ({RangeText(min, max)})",
            CustomParser = r => ParseInt(r, name, min, max),
        };
        Accepted.AddOrUpdate(o, RangeText(min, max));
        return o;
    }

    /// <summary>An allocation policy: a built-in name or a user's class (PolicyCatalog); null when not given.</summary>
    public static Option<string?> Policy(string name, string description)
    {
        string accepted = $"{string.Join(", ", Core.Scheduling.PolicyCatalog.BuiltIn)}, 'Namespace.Type, Assembly' or 'path/Lib.dll:Namespace.Type'";
        var o = new Option<string?>(name) { Description = $"{description}: {accepted}" };
        Accepted.AddOrUpdate(o, accepted);
        return o;
    }

    /// <summary>A comma-separated list of policies, the value optional (<paramref name="default"/> when the
    /// option stands alone). The parser takes the next word whatever it is, so a scenario file after the
    /// option comes back as <see cref="PolicyListValue.NotPolicies"/> for the command to take as its file.</summary>
    public static Option<PolicyListValue?> PolicyList(string name, string description, string[] @default)
    {
        var o = new Option<PolicyListValue?>(name)
        {
            Description = $"{description} (default {string.Join(",", @default)})",
            Arity = ArgumentArity.ZeroOrOne,
            CustomParser = r =>
            {
                if (r.Tokens.Count == 0) return new PolicyListValue(@default, null);
                string raw = r.Tokens[0].Value;
                // A comma followed by a space belongs to an assembly-qualified class name ("NS.Type, Asm").
                string[] items = System.Text.RegularExpressions.Regex.Split(raw, ",(?! )").Select(i => i.Trim()).ToArray();
                if (!items.All(LooksLikePolicy)) return new PolicyListValue(@default, raw);
                if (items.Any(string.IsNullOrEmpty) || items.Distinct().Count() != items.Length)
                    r.AddError($"{name}: '{raw}' must list distinct policies separated by commas");
                return new PolicyListValue(items, null);
            },
        };
        Accepted.AddOrUpdate(o, "policies separated by commas");
        return o;
    }

    private static bool LooksLikePolicy(string s) =>
        s.Length == 0 || Core.Scheduling.PolicyCatalog.BuiltIn.Contains(s) || s.Contains(".dll:", StringComparison.OrdinalIgnoreCase) || s.Contains(", ");

    /// <summary>An option whose value is one of an enumeration's names (any case; numbers are refused).</summary>
    public static Option<T> Enum<T>(string name, string description, T @default) where T : struct, System.Enum
    {
        string[] names = System.Enum.GetNames<T>();
        var o = new Option<T>(name)
        {
            Description = $"{description}: {string.Join(", ", names)} (default {@default})",
            DefaultValueFactory = _ => @default,
            CustomParser = r =>
            {
                string raw = r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
                string? match = names.FirstOrDefault(n => string.Equals(n, raw, StringComparison.OrdinalIgnoreCase));
                if (match is null)
                {
                    r.AddError($"{name}: '{raw}' is not one of {string.Join(", ", names)}");
                    return @default;
                }
                return System.Enum.Parse<T>(match);
            },
        };
        Accepted.AddOrUpdate(o, $"one of {string.Join(", ", names)}");
        return o;
    }

    /// <summary>An option whose value is one of <paramref name="choices"/> (exactly as written).</summary>
    public static Option<string> Choice(string name, string description, string[] choices, string @default)
    {
        var o = new Option<string>(name)
        {
            Description = $"{description}: {string.Join(", ", choices)} (default {@default})",
            DefaultValueFactory = _ => @default,
            CustomParser = r =>
            {
                string raw = r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
                if (choices.Contains(raw)) return raw;
                r.AddError($"{name}: '{raw}' is not one of {string.Join(", ", choices)}");
                return @default;
            },
        };
        Accepted.AddOrUpdate(o, $"one of {string.Join(", ", choices)}");
        return o;
    }

    /// <summary>A file path option (checked by the command before anything runs, see <see cref="OutputPaths"/>).</summary>
    public static Option<string?> File(string name, string description)
    {
        var o = new Option<string?>(name) { Description = description };
        Accepted.AddOrUpdate(o, "a file path");
        // An empty name (`--json ""`, an unset shell variable) would fail deep in path handling without the option named.
        o.Validators.Add(r =>
        {
            if (r.Tokens.Count > 0 && r.Tokens[0].Value.Trim().Length == 0) r.AddError($"{name}: the file name is empty; give a file name");
        });
        return o;
    }

    /// <summary>A repeatable key=value option (e.g. --set); each value is parsed by the command.</summary>
    public static Option<string[]> Settings(string name, string description)
    {
        var o = new Option<string[]>(name) { Description = description, Arity = ArgumentArity.OneOrMore, AllowMultipleArgumentsPerToken = false };
        Accepted.AddOrUpdate(o, "key=value, e.g. idleTax=0.5 or vms[1].shares=2000");
        return o;
    }

    /// <summary>A file argument (optional unless <paramref name="required"/>); a word starting with '-' is an
    /// option this command does not know.</summary>
    public static Argument<string?> FileArgument(string name, string description, string command, bool required = false)
    {
        return new Argument<string?>(name)
        {
            Description = description,
            Arity = required ? ArgumentArity.ExactlyOne : ArgumentArity.ZeroOrOne,
            CustomParser = r =>
            {
                if (r.Tokens.Count == 0) return null;
                string raw = r.Tokens[0].Value;
                if (raw.StartsWith('-')) r.AddError($"'{raw}' is not an option of {command}");
                return raw;
            },
        };
    }

    /// <summary>True when the user wrote <paramref name="option"/> (not just its default).</summary>
    public static bool Given(ParseResult parse, Option option) => parse.GetResult(option) is { Implicit: false };

    /// <summary>Refuses two options given together, saying why they contradict each other.</summary>
    public static void Conflict(ParseResult parse, Option a, Option b, string why)
    {
        if (Given(parse, a) && Given(parse, b)) throw new UsageException($"{a.Name} and {b.Name} cannot be used together: {why}");
    }

    /// <summary>The error to show of a failed parse: a word the parser did not know says more than the
    /// "no command" that follows from it.</summary>
    public static ParseError FirstError(ParseResult parse) =>
        parse.Errors.FirstOrDefault(e => !NoCommand().IsMatch(e.Message)) ?? parse.Errors[0];

    /// <summary>One parse error in plain words: the parser's messages rephrased and completed with what the
    /// option accepts; the options' own messages as they are.</summary>
    public static string Explain(ParseError error)
    {
        string m = error.Message;
        Option? option = error.SymbolResult switch
        {
            OptionResult o => o.Option,
            ArgumentResult { Parent: OptionResult o } => o.Option,
            _ => null,
        };
        string accepted = option is not null && Accepted.TryGetValue(option, out string? a) ? $" (accepted: {a})" : "";
        if (MissingValue().Match(m) is { Success: true } missing) return $"{missing.Groups[1].Value} needs a value{accepted}";
        if (Unrecognized().Match(m) is { Success: true } unknown)
        {
            Command command = (error.SymbolResult as CommandResult)?.Command ?? ParentCommand(error.SymbolResult);
            string word = unknown.Groups[1].Value;
            if (command is RootCommand)
                return $"'{word}' is not a pagelab command (commands: {string.Join(", ", command.Subcommands.Select(c => c.Name))})";
            return $"'{word}' is not an option or argument of pagelab {command.Name}";
        }
        if (MissingArgument().IsMatch(m) && ParentCommand(error.SymbolResult) is Command needs and not RootCommand)
            return $"pagelab {needs.Name} needs its {string.Join(" and ", needs.Arguments.Select(a => $"<{a.Name}>"))} argument";
        if (NoCommand().IsMatch(m) && error.SymbolResult is CommandResult { Command: var c })
            return $"a command is required: one of {string.Join(", ", c.Subcommands.Select(s => s.Name))}";
        if (SingleValue().Match(m) is { Success: true } twice) return $"{twice.Groups[1].Value} is given more than once; give it once";
        return m;
    }

    private static Command ParentCommand(SymbolResult? r)
    {
        for (; r is not null; r = r.Parent)
            if (r is CommandResult c) return c.Command;
        return new RootCommand();
    }

    private static int? ParseInt(ArgumentResult r, string name, int min, int max)
    {
        if (r.Tokens.Count == 0) return null;
        string raw = r.Tokens[^1].Value;
        if (!int.TryParse(raw, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int v))
        {
            // Distinguish "too large to be a 32-bit number" from "not a number at all".
            string what = long.TryParse(raw, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out _) || IsDigits(raw)
                ? "is out of range" : "is not a whole number";
            r.AddError($"{name}: '{raw}' {what} (accepted: {RangeText(min, max)})");
            return null;
        }
        if (v < min || v > max)
        {
            r.AddError($"{name}: {v} is out of range (accepted: {RangeText(min, max)})");
            return null;
        }
        return v;
    }

    private static bool IsDigits(string s) => s.TrimStart('-', '+') is { Length: > 0 } d && d.All(char.IsAsciiDigit);

    private static string RangeText(int min, int max) => $"whole numbers from {min} to {max}";

    [GeneratedRegex(@"^Required argument missing for option: '(.+)'\.$")]
    private static partial Regex MissingValue();

    [GeneratedRegex(@"^Required argument missing for command: '(.+)'\.$")]
    private static partial Regex MissingArgument();

    [GeneratedRegex(@"^Unrecognized command or argument '(.*)'\.$")]
    private static partial Regex Unrecognized();

    [GeneratedRegex(@"^Required command was not provided\.$")]
    private static partial Regex NoCommand();

    [GeneratedRegex(@"^Option '(.+)' expects a single argument but \d+ were provided\.$")]
    private static partial Regex SingleValue();
}
