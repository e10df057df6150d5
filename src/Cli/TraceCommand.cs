// `pagelab trace convert IN OUT`: Valgrind lackey text to the page-epoch format (docs/traces.md), streamed (IN
// may be '-', a pipe from Valgrind); `pagelab trace info FILE`: what a page-epoch file's header says.
using System.CommandLine;
using System.Diagnostics;
using PageLab.Lab.Workloads.Traces;

namespace PageLab.Cli;

internal static class TraceCommand
{
    public const int DefaultWindow = 100_000;

    public static Command Create()
    {
        var trace = new Command("trace", "Memory traces for the trace workload kind: convert Valgrind lackey text, describe a page-epoch file.");
        trace.Subcommands.Add(CreateConvert());
        trace.Subcommands.Add(CreateInfo());
        return trace;
    }

    private static Argument<string> Path(string name, string description) => new(name) { Description = description, Arity = ArgumentArity.ExactlyOne };

    private static Command CreateConvert()
    {
        var input = Path("lackey", "Lackey text (valgrind --tool=lackey --trace-mem=yes --log-file=F); '-' reads standard input");
        var output = Path("pet", "The page-epoch file to write (written beside it, then renamed: it appears whole or not at all)");
        var window = CliOptions.Int("--window", "References per window (a window is a set of pages; replay takes windowsPerTick of them per tick)", 1, int.MaxValue, DefaultWindow);
        var dataOnly = new Option<bool>("--data-only") { Description = "Leave out instruction fetches (I lines): only loads, stores and modifies count" };
        var command = new Command("convert", "Convert Valgrind lackey text to the page-epoch format (docs/traces.md).");
        command.Arguments.Add(input);
        command.Arguments.Add(output);
        command.Options.Add(window);
        command.Options.Add(dataOnly);
        command.SetAction(parse => Program.Guarded(() =>
        {
            string from = parse.GetValue(input)!, to = parse.GetValue(output)!;
            if (to == "-") throw new UsageException("the page-epoch file cannot be standard output: its header is completed at the end; give a file name");
            var clock = Stopwatch.StartNew();
            PageEpochHeader h;
            try { h = TraceConverter.ConvertFile(from, to, parse.GetValue(window), instructions: !parse.GetValue(dataOnly)); }
            catch (TraceFormatException e) { throw new UsageException(e.Message); }
            double s = clock.Elapsed.TotalSeconds;
            long bytes = new FileInfo(to).Length;
            Console.WriteLine($"{to}: {h.References} references ({(h.Instructions ? "with" : "without")} instruction fetches) in {h.Windows} windows of {h.ReferencesPerWindow}, " +
                              $"{h.DistinctPages} distinct pages, {h.PageTouches} page touches; {bytes} bytes ({(h.References == 0 ? 0 : (double)bytes / h.References):0.###} per reference); " +
                              $"{s:0.0} s, {(s > 0 ? h.References / s / 1e6 : 0):0.0} M references/s");
            return ExitCodes.Ok;
        }));
        return command;
    }

    private static Command CreateInfo()
    {
        var file = Path("pet", "A page-epoch file");
        var command = new Command("info", "Print what a page-epoch file's header says.");
        command.Arguments.Add(file);
        command.SetAction(parse => Program.Guarded(() =>
        {
            string path = parse.GetValue(file)!;
            PageEpochHeader h;
            try { h = PageEpochHeader.Read(path); }
            catch (TraceFormatException e) { throw new UsageException(e.Message); }
            Console.WriteLine($"{path}: page-epoch version 1, pages of {1L << h.PageShift} bytes, {h.References} references " +
                              $"({(h.Instructions ? "with" : "without")} instruction fetches), {h.Windows} windows of {h.ReferencesPerWindow}, " +
                              $"{h.DistinctPages} distinct pages, {h.PageTouches} page touches");
            return ExitCodes.Ok;
        }));
        return command;
    }
}
