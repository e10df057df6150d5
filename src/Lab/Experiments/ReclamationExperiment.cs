// The same-image experiment: several VMs booted from one guest image (identical kernel pages and file
// pages, each VM's own application pages, memory the guest touched at boot and freed), and the host must
// take back a number of frames from them. Compared: page sharing alone, ballooning alone, host swap alone,
// and ESX's order (share first, then balloon, then host swap): frames taken back, guest paging, host
// swapping, copy-on-write breaks and CPU spent scanning, then a workload phase that reads and writes
// the guests' pages (every read checked against the image). Built outside the scheduler on purpose.
using System.Diagnostics;
using System.Runtime.InteropServices;
using PageLab.Core.Balloon;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Sharing;

namespace PageLab.Lab.Experiments;

/// <summary>Which mechanisms take frames back, in which order.</summary>
public enum ReclamationOrder { ShareOnly, BalloonOnly, HostSwapOnly, ShareThenBalloonThenSwap }

/// <param name="Vms">VMs booted from the same image.</param>
/// <param name="KernelPages">Kernel pages per VM (pinned, the same in every VM).</param>
/// <param name="FilePages">File (page-cache) pages per VM, the same in every VM.</param>
/// <param name="AppPages">Application pages per VM, each VM's own content.</param>
/// <param name="FreePages">Pages each guest touched at boot and freed (backed, stale content).</param>
/// <param name="ReclaimFrames">Frames the host wants back from the VMs together.</param>
/// <param name="Touches">Guest accesses in the workload phase after reclamation.</param>
public sealed record ReclamationOptions(int Vms = 3, ulong KernelPages = 256, ulong FilePages = 256, ulong AppPages = 256,
    ulong FreePages = 256, long ReclaimFrames = 1300, int Touches = 30_000, int Seed = 1)
{
    /// <summary>Guest pages per VM: the above, plus headroom the guest never touches (it keeps some free).</summary>
    public ulong PagesPerVm => KernelPages + FilePages + AppPages + FreePages + Headroom;

    public const ulong Headroom = 128;
}

/// <param name="FramesBefore">Frames the VMs used after boot.</param>
/// <param name="FramesAfterReclaim">Frames they used once the mechanisms had run.</param>
/// <param name="FramesAfterWorkload">Frames they used at the end (copy-on-write and swap-ins take some back).</param>
/// <param name="BySharing">Frames sharing saved. <paramref name="ByBalloon"/>: frames balloons took.
/// <paramref name="ByHostSwap"/>: pages the host swapped out on request.</param>
/// <param name="ScanCpu">Time the scanner spent scanning.</param>
/// <param name="WorkloadTime">Time the workload phase took.</param>
/// <param name="WrongReads">Workload reads that saw anything but the image's bytes (must be 0).</param>
public sealed record ReclamationResult(ReclamationOrder Order, long FramesBefore, long FramesAfterReclaim, long FramesAfterWorkload,
    long BySharing, long ByBalloon, long ByHostSwap, long GuestSwapOuts, long GuestSwapIns, long HostSwapOuts, long HostSwapIns,
    long CowBreaks, TimeSpan ScanCpu, TimeSpan ReclaimTime, TimeSpan WorkloadTime, long WrongReads, IReadOnlyList<string> Problems)
{
    public long Saved => FramesBefore - FramesAfterReclaim;
}

public static class ReclamationExperiment
{
    private const ulong KernelTag = 0x4B45_524E_0000_0000, FileTag = 0x4649_4C45_0000_0000, AppTag = 0x4150_5000_0000_0000;

    private static ulong Word(ulong tag, int vm, ulong vpn, int i) => tag | (ulong)(uint)vm << 40 | vpn << 12 | (uint)i;

    private sealed class Guest
    {
        public required GuestVm Vm;
        public required GuestOperatingSystem Os;
        public required BalloonApplication App;
        public required BalloonBackend Balloon;
        public required GuestProcess Kernel, Files, AppProcess;
    }

    public static IReadOnlyList<ReclamationResult> RunAll(ReclamationOptions options) =>
        Enum.GetValues<ReclamationOrder>().Select(o => Run(o, options)).ToList();

    public static ReclamationResult Run(ReclamationOrder order, ReclamationOptions o)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(o.Vms, 1);
        bool share = order is ReclamationOrder.ShareOnly or ReclamationOrder.ShareThenBalloonThenSwap;
        bool balloon = order is ReclamationOrder.BalloonOnly or ReclamationOrder.ShareThenBalloonThenSwap;
        bool swap = order is ReclamationOrder.HostSwapOnly or ReclamationOrder.ShareThenBalloonThenSwap;
        using var arena = HostArena.Create(checked((uint)(2 * (ulong)o.Vms * o.PagesPerVm + 256)), "pagelab-same-image");
        var guests = new List<Guest>();
        var problems = new List<string>();
        try
        {
            for (int i = 0; i < o.Vms; i++) guests.Add(Boot(arena, i, o, share));
            long Used() { FrameCounts c = arena.Counts; return c.Guest + c.Shared; }
            long before = Used();
            var clock = Stopwatch.StartNew();

            long bySharing = 0, byBalloon = 0, byHostSwap = 0;
            var scanner = new PageScanner(arena, guests.Select(g => g.Vm));
            if (share)
            {
                scanner.ScanPass();
                scanner.ScanPass(); // pages first seen in the previous pass's last VM
                bySharing = before - Used();
            }
            long wanted = o.ReclaimFrames - (before - Used());
            if (balloon && wanted > 0) byBalloon = Inflate(arena, guests, () => o.ReclaimFrames - (before - Used()));
            wanted = o.ReclaimFrames - (before - Used());
            if (swap && wanted > 0)
            {
                foreach (Guest g in guests)
                    byHostSwap += g.Vm.HostSwapOut((int)Math.Ceiling((double)wanted / guests.Count));
            }
            long afterReclaim = Used();
            TimeSpan reclaimTime = clock.Elapsed;
            // The host holds each VM to what it has now plus its part of whatever was taken back beyond the
            // goal; past that, a fault (a copy-on-write break, a swap-in) host-swaps one of the VM's own pages.
            long surplus = Math.Max(0, before - afterReclaim - o.ReclaimFrames) / guests.Count;
            foreach (Guest g in guests) g.Vm.SetFrameLimit((ulong)Math.Max(1, arena.OwnedBy(g.Vm.Id) + surplus));

            (long hostInsBefore, long guestInsBefore) = (Sum(guests, g => (long)g.Vm.Counters.HostSwapIns), Sum(guests, g => (long)g.Os.Stats.SwapIns));
            clock.Restart();
            long wrong = Workload(guests, o, problems);
            TimeSpan workloadTime = clock.Elapsed;

            foreach (string p in FrameAccounting.Check(arena, guests.Select(g => g.Vm).ToList())) problems.Add($"accounting: {p}");
            return new ReclamationResult(order, before, afterReclaim, Used(), bySharing, byBalloon, byHostSwap,
                Sum(guests, g => (long)g.Os.Stats.SwapOuts), Sum(guests, g => (long)g.Os.Stats.SwapIns) - guestInsBefore,
                Sum(guests, g => (long)g.Vm.Counters.HostSwapOuts), Sum(guests, g => (long)g.Vm.Counters.HostSwapIns) - hostInsBefore,
                Sum(guests, g => (long)g.Vm.Counters.CowBreaks), scanner.Metrics.ScanTime, reclaimTime, workloadTime, wrong, problems);
        }
        finally
        {
            foreach (Guest g in guests)
            {
                g.Os.Dispose();
                g.Vm.Dispose();
            }
        }
    }

    private static long Sum(List<Guest> guests, Func<Guest, long> f) => guests.Sum(f);

    private static Guest Boot(HostArena arena, int i, ReclamationOptions o, bool share)
    {
        GuestVm vm = GuestVm.Create(arena, $"image{i}", o.PagesPerVm, poolCapacity: 64);
        if (share) vm.EnableSharing();
        var os = new GuestOperatingSystem(vm);
        var app = new BalloonApplication(os, vm.Id);
        GuestProcess kernel = os.Spawn("kernel", o.KernelPages, pinned: true);
        GuestProcess files = os.Spawn("files", o.FilePages);
        GuestProcess appProcess = os.Spawn("app", o.AppPages);
        Fill(kernel, KernelTag, 0);
        Fill(files, FileTag, 0);
        Fill(appProcess, AppTag, i);
        // Memory used during boot and freed: the guest's free pages keep their frames and stale bytes.
        GuestProcess boot = os.Spawn("boot", o.FreePages);
        for (ulong v = 0; v < o.FreePages; v++) MemoryMarshal.Cast<byte, ulong>(boot.Page(v)).Fill(Word(AppTag, 1000 + i, v, 0));
        for (ulong v = 0; v < o.FreePages; v++) boot.Release(v);
        return new Guest { Vm = vm, Os = os, App = app, Balloon = new BalloonBackend(os, app), Kernel = kernel, Files = files, AppProcess = appProcess };
    }

    private static void Fill(GuestProcess p, ulong tag, int vm)
    {
        for (ulong v = 0; v < p.VirtualPages; v++)
        {
            Span<ulong> w = MemoryMarshal.Cast<byte, ulong>(p.Page(v));
            for (int k = 0; k < w.Length; k++) w[k] = Word(tag, vm, v, k);
        }
    }

    // Balloons take frames, spread over the VMs, until the host has what it wants (stillWanted() <= 0) or
    // they stop making progress. A balloon page the guest had never backed costs a demand fault first and
    // saves nothing: only the net change counts. Returns the frames the balloons took.
    private static long Inflate(HostArena arena, List<Guest> guests, Func<long> stillWanted)
    {
        long taken = 0;
        int idle = 0;
        ulong step = (ulong)Math.Max(1, stillWanted() / guests.Count / 8);
        while (stillWanted() > 0 && idle < 12) // a balloon out of puff backs off for 4 rounds: ride over it
        {
            long before = taken;
            foreach (Guest g in guests)
            {
                if (stillWanted() <= 0) break;
                g.App.SetTarget(Math.Min(g.Vm.PageCount, g.App.ReservedPages + step));
                ReclaimResult r = g.Balloon.Inflate((int)step);
                arena.Release(r.Frames);
                taken += r.Frames.Length;
            }
            idle = taken == before ? idle + 1 : 0;
        }
        return taken;
    }

    // Kernel pages read (40%), file pages read (45%) and now and then written (5%), application pages
    // written (10%); every read checked against what the page must hold.
    private static long Workload(List<Guest> guests, ReclamationOptions o, List<string> problems)
    {
        var rng = new Random(o.Seed);
        long wrong = 0;
        for (int n = 0; n < o.Touches; n++)
        {
            int vi = rng.Next(guests.Count);
            Guest g = guests[vi];
            int what = rng.Next(100);
            (GuestProcess p, ulong tag, int vm) = what < 40 ? (g.Kernel, KernelTag, 0) : what < 90 ? (g.Files, FileTag, 0) : (g.AppProcess, AppTag, vi);
            ulong vpn = (ulong)rng.Next((int)p.VirtualPages);
            Span<ulong> w = MemoryMarshal.Cast<byte, ulong>(p.Page(vpn));
            int k = rng.Next(1, w.Length);
            if (what is >= 85 and < 90 || what >= 90)
            {
                w[0] = Word(tag, vm, vpn, 0); // rewrites the same first word: a write fault if the page is shared
                continue;
            }
            if (w[k] != Word(tag, vm, vpn, k) || w[0] != Word(tag, vm, vpn, 0))
            {
                wrong++;
                if (problems.Count < 10) problems.Add($"{g.Vm.Name} {p.Name} page {vpn} word {k} reads {w[k]:x16}");
            }
        }
        return wrong;
    }
}
