// Entry point: BenchmarkDotNet picks the benchmark classes from the command line (--filter, --job).
// The exit code is 1 when a benchmark failed to build or run, so CI's dry run catches a broken benchmark.
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace PageLab.Bench;

public static class Program
{
    public static int Main(string[] args)
    {
        IEnumerable<Summary> summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        bool failed = summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success));
        return failed ? 1 : 0;
    }
}
