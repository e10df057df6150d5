// `pagelab info`: installs the fault engine and reports what the host offers it: page size, the
// mapping limit and PageLab's budget under it, userfaultfd, the SIGSEGV / SIGBUS handler chain, and
// which kernel injectors of memory errors are available (and why not).
using System.CommandLine;
using System.Runtime.InteropServices;
using PageLab.Core.Faults;
using PageLab.Native;
using Spectre.Console;

namespace PageLab.Cli;

internal static class InfoCommand
{
    /// <summary>sigaction flags as Linux x86-64 defines them (asm-generic/signal-defs.h).</summary>
    private static readonly (uint Bit, string Name)[] SigactionFlags =
    [
        (0x00000004, "SA_SIGINFO"),
        (0x04000000, "SA_RESTORER"),
        (0x08000000, "SA_ONSTACK"),
        (0x10000000, "SA_RESTART"),
        (0x40000000, "SA_NODEFER"),
        (0x80000000, "SA_RESETHAND"),
    ];

    public static Command Create()
    {
        var command = new Command("info", "Install the fault engine and show what the host offers it.");
        command.SetAction(_ => Program.Guarded(Run));
        return command;
    }

    private static int Run()
    {
        FaultEngine.EnsureInstalled();
        HostSystemInfo host = IHostOs.Current.Describe(); // after install, so the mapping count is current

        var table = new Table().Title("PageLab host").AddColumn("Property").AddColumn("Value");
        Row(table, "OS", $"{host.Os} ({RuntimeInformation.OSDescription})");
        Row(table, "kernel", host.Kernel);
        Row(table, "runtime", RuntimeInformation.FrameworkDescription);
        Row(table, "page size", $"{host.PageSize} bytes");
        Row(table, "vm.max_map_count", host.MaxMapCount?.ToString() ?? "unknown (/proc/sys/vm/max_map_count unreadable)");
        Row(table, "process mappings", $"{host.CurrentMappings} (lines of /proc/self/maps)");
        Row(table, "PageLab mapping budget", $"{FaultEngine.MapBudget} (max_map_count - mappings at install - {FaultEngine.Headroom} headroom)");
        Row(table, "PageLab mappings in use", $"{FaultEngine.MapsInUse}");
        Row(table, "userfaultfd", host.Userfaultfd);
        Row(table, "SIGSEGV handler", FaultEngine.Installed ? "installed; chains faults it does not own to the runtime's handler" : "not installed");
        Row(table, "chained handler flags", FaultEngine.PreviousHandlerFlags is long flags ? DescribeFlags(flags) : "n/a (handler not installed)");
        Row(table, "faults chained so far", $"{FaultEngine.ChainedFaults}");
        if (OperatingSystem.IsWindows())
        {
            Row(table, "memory errors from the OS", "none reach the process: " + PageLab.Core.Recovery.KernelErrorInjector.WindowsReason);
        }
        else
        {
            Row(table, "SIGBUS handler", FaultEngine.Installed
                ? "installed; memory errors on guest pages (BUS_MCEERR_AR, poison markers) recovered or contained in the handler, BUS_MCEERR_AO queued; others chained"
                : "not installed");
            Row(table, "chained SIGBUS handler flags", KernelErrors.PreviousHandlerFlags is long bus ? DescribeFlags(bus) : "n/a (handler not installed)");
            KernelInjectors k = KernelErrors.Injectors;
            Row(table, "kernel injector: UFFDIO_POISON", (k.UffdPoison ? "available: " : "unavailable: ") + k.UffdPoisonReason);
            Row(table, "kernel injector: MADV_HWPOISON", (k.HwPoison ? "available: " : "unavailable: ") + k.HwPoisonReason);
            Row(table, "inject --via kernel / campaign --via kernel", k.Preferred is KernelInjector p ? $"use {p}" : "unavailable");
        }
        AnsiConsole.Write(table);
        return 0;
    }

    /// <summary>sa_flags in hex with the names of the bits it sets, e.g. "0x14000004 (SA_SIGINFO | SA_RESTORER | SA_RESTART)".</summary>
    internal static string DescribeFlags(long flags)
    {
        uint bits = unchecked((uint)flags); // sa_flags is a C int; SA_RESETHAND is its sign bit
        var names = new List<string>();
        uint left = bits;
        foreach ((uint bit, string name) in SigactionFlags)
        {
            if ((bits & bit) == 0) continue;
            names.Add(name);
            left &= ~bit;
        }
        if (left != 0) names.Add($"0x{left:X8}");
        return names.Count == 0 ? $"0x{bits:X8} (none)" : $"0x{bits:X8} ({string.Join(" | ", names)})";
    }

    private static void Row(Table table, string property, string value) =>
        table.AddRow(Markup.Escape(property), Markup.Escape(value));
}
