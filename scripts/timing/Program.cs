// Round-trip costs of the fault engine from managed code, one page at a time: a remap (GuestVm.Map
// onto another frame), a demand-zero fault (first touch of an unbacked page) and a protection fault
// (first touch of a sampled, inaccessible page). Prints medians and p99 in microseconds.
using System.Diagnostics;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Native;

int n = args.Length > 0 ? int.Parse(args[0]) : 20_000;
const ulong Pages = 256;
using var arena = HostArena.Create(1024, "pagelab-timing");
using var vm = GuestVm.Create(arena, "timing", Pages, poolCapacity: 512);
HostSystemInfo host = IHostOs.Current.Describe();
Console.WriteLine($"host: {host.Os}, {host.Kernel}; {Environment.ProcessorCount} CPUs; {n} samples each");

// Remap: page 0 alternates between two frames.
HostFrame[] pair = arena.Allocate(2);
vm.Map(new GuestPage(0), [pair[0]]);
HostFrame spare = pair[1];
Report("remap one page (GuestVm.Map)", Measure(n, _ => spare = vm.Map(new GuestPage(0), [spare])[0]));

// Demand-zero fault: unback a page, then touch it; the handler maps a pool frame.
var touch = new GuestPage(1);
Report("demand-zero fault (first touch)", Measure(n, i =>
{
    vm.Page(touch)[0] = 1;
}, before: _ =>
{
    if (vm.StateOf(touch) != GuestPageState.Unbacked) vm.Unback(touch, 1);
    if (vm.PoolCount == 0) vm.RefillPool();
}));

// Protection fault: sample a backed page (no access), then touch it; the handler restores it.
var sampled = new GuestPage(2);
vm.Back(sampled, 1);
GuestPage[] one = [sampled];
Report("protection fault (sampled page, first touch)", Measure(n, _ => { vm.Page(sampled)[0] = 2; }, before: _ => vm.Sample(one)));

static double[] Measure(int n, Action<int> op, Action<int>? before = null)
{
    var us = new double[n];
    for (int i = -n / 10; i < n; i++) // the first tenth warms up
    {
        before?.Invoke(i);
        long t0 = Stopwatch.GetTimestamp();
        op(i);
        long t1 = Stopwatch.GetTimestamp();
        if (i >= 0) us[i] = (t1 - t0) * 1e6 / Stopwatch.Frequency;
    }
    Array.Sort(us);
    return us;
}

static void Report(string what, double[] sorted) =>
    Console.WriteLine($"{what,-46} median {sorted[sorted.Length / 2],8:F2} us   p99 {sorted[sorted.Length * 99 / 100],8:F2} us");
