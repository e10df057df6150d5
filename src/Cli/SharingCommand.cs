// `pagelab sharing`: the same-image experiment (Core/Sharing/ReclamationExperiment.cs). Several VMs booted
// from one guest image; the host takes frames back by page sharing, ballooning, host swap, or ESX's order
// of the three; prints what each saved and cost.
using System.CommandLine;
using PageLab.Core.Sharing;
using Spectre.Console;
using PageLab.Lab.Experiments;

namespace PageLab.Cli;

internal static class SharingCommand
{
    public static Command Create()
    {
        var vms = CliOptions.Int("--vms", "VMs booted from the same image", 2, 16, 3);
        var reclaim = CliOptions.Int("--reclaim", "Frames the host wants back from the VMs together", 0, 1 << 20, 1300);
        var touches = CliOptions.Int("--touches", "Guest accesses in the workload phase after reclamation", 0, 10_000_000, 30_000);
        var seed = CliOptions.Int("--seed", "Seed of the workload", int.MinValue, int.MaxValue, 1);
        var command = new Command("sharing",
            "Same-image VMs: frames taken back by page sharing, ballooning, host swap, and ESX's order (share, balloon, host swap), and what each costs.");
        command.Options.Add(vms);
        command.Options.Add(reclaim);
        command.Options.Add(touches);
        command.Options.Add(seed);
        command.SetAction(parse => Program.Guarded(() =>
        {
            var options = new ReclamationOptions(Vms: parse.GetValue(vms), ReclaimFrames: parse.GetValue(reclaim),
                Touches: parse.GetValue(touches), Seed: parse.GetValue(seed));
            using var interrupts = new Interrupts("stopping after the experiment in progress");
            // One experiment per reclamation order; a signal stops between them and the table shows those done.
            var results = new List<ReclamationResult>();
            ReclamationOrder[] orders = Enum.GetValues<ReclamationOrder>();
            foreach (ReclamationOrder order in orders)
            {
                if (interrupts.Requested) break;
                results.Add(ReclamationExperiment.Run(order, options));
            }
            var table = new Table().Title($"{options.Vms} VMs of {options.PagesPerVm} pages from one image " +
                $"(kernel {options.KernelPages}, files {options.FilePages}, app {options.AppPages}, freed {options.FreePages}); " +
                $"the host wants {options.ReclaimFrames} frames back");
            table.AddColumn("");
            foreach (ReclamationResult r in results) table.AddColumn(new TableColumn(Name(r.Order)).RightAligned());
            void Row(string what, Func<ReclamationResult, string> cell) => table.AddRow([what, .. results.Select(cell)]);
            Row("frames used after boot", r => $"{r.FramesBefore:N0}");
            Row("frames taken back", r => $"{r.Saved:N0}");
            Row("  by sharing", r => $"{r.BySharing:N0}");
            Row("  frames balloons took", r => $"{r.ByBalloon:N0}");
            Row("  pages host-swapped on request", r => $"{r.ByHostSwap:N0}");
            Row("guest page-outs / page-ins", r => $"{r.GuestSwapOuts:N0} / {r.GuestSwapIns:N0}");
            Row("host swap-outs / swap-ins", r => $"{r.HostSwapOuts:N0} / {r.HostSwapIns:N0}");
            Row("copy-on-write breaks", r => $"{r.CowBreaks:N0}");
            Row("frames used after the workload", r => $"{r.FramesAfterWorkload:N0}");
            Row("CPU scanning", r => $"{r.ScanCpu.TotalMilliseconds:N1} ms");
            Row("reclaim time", r => $"{r.ReclaimTime.TotalMilliseconds:N1} ms");
            Row($"workload ({options.Touches:N0} accesses)", r => $"{r.WorkloadTime.TotalMilliseconds:N1} ms");
            Row("wrong reads / problems", r => $"{r.WrongReads} / {r.Problems.Count}");
            AnsiConsole.Write(table);
            foreach (ReclamationResult r in results)
                foreach (string p in r.Problems.Take(10)) Console.Error.WriteLine($"pagelab: {Name(r.Order)}: {p}");
            if (interrupts.Requested && results.Count < orders.Length)
            {
                Console.Error.WriteLine($"pagelab: interrupted ({interrupts.Signal}); {orders.Length - results.Count} of the {orders.Length} experiments did not run");
                return interrupts.ExitCode;
            }
            return results.All(r => r.Problems.Count == 0 && r.WrongReads == 0) ? 0 : 1;
        }));
        return command;
    }

    private static string Name(ReclamationOrder o) => o switch
    {
        ReclamationOrder.ShareOnly => "share",
        ReclamationOrder.BalloonOnly => "balloon",
        ReclamationOrder.HostSwapOnly => "host swap",
        _ => "share, balloon, swap",
    };
}
