// `pagelab validate FILE`: checks a scenario file as `run` would, without running it: "ok" and exit 0,
// or the first mistake (file, key, value) and exit 2.
using System.CommandLine;
using PageLab.Lab.Scenarios;

namespace PageLab.Cli;

internal static class ValidateCommand
{
    public static Command Create()
    {
        var file = CliOptions.FileArgument("scenario", "Scenario JSON file to check (schema: docs/scenario-schema.md)", "pagelab validate", required: true);
        var set = CliOptions.Settings("--set", "Set a scenario key before the check, as run does, e.g. vms[1].shares=2000 (repeatable)");
        var command = new Command("validate", "Check a scenario file without running it: 'ok' and exit 0, or the first mistake and exit 2.");
        command.Arguments.Add(file);
        command.Options.Add(set);
        command.SetAction(parse => Program.Guarded(() =>
        {
            string path = parse.GetValue(file)!;
            Scenario s = ScenarioInput.Load(path, (parse.GetValue(set) ?? []).Select(v => ScenarioSettings.Parse("--set", v)).ToList());
            Console.WriteLine($"ok: {path}: scenario '{s.Name}', {s.Vms.Count} VM{(s.Vms.Count == 1 ? "" : "s")}, host {s.HostPages} pages, " +
                              $"{s.Ticks} ticks, {s.Injections.Count} injection{(s.Injections.Count == 1 ? "" : "s")}, seed {s.Seed}");
            return ExitCodes.Ok;
        }));
        return command;
    }
}
