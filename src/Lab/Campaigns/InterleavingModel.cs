// A model-based interleaving check of the whole engine on real memory: random operations (guest reads
// and writes, error injection into pages and parity frames, reports, scrubs, protection, remaps, unbacks,
// host swap, sampling, frame limits, pool refills, page sharing: merges, copy-on-write writes, unshares,
// errors in shared frames) from several threads in random orders, against a
// managed shadow of every page's content; after every round of steps, every page, every parity group and
// the frame accounting are checked. The suite runs a short form; `pagelab campaign model` the long one.
// With osFailures (the anomaly campaign, `pagelab campaign model --os-failures`) every feature runs at once
// (fault-around, clean disk copies, kernel-delivered errors and VMs created and destroyed as well) while the engine's OS calls
// fail, each kind in turn and all at random, and reads and writes come up short; after every round the
// engine's own table checks (free bitmap, counts, mapping count) and the kernel's /proc/self/maps are
// compared too. An operation refused because an OS call failed is counted, not a problem: what must hold
// is that nothing it touched is left half done.
// This file holds the run: the two VMs, the threads, the round loop and the result; the operations are
// InterleavingModel.Operations.cs, the shadow and the checks after each round InterleavingModel.Oracle.cs.
using System.Runtime.InteropServices;
using PageLab.Core.Faults;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core;
using PageLab.Core.Recovery;

namespace PageLab.Lab.Campaigns;

public sealed record ModelResult(long Operations, long Rounds, long Injected, long Reported, long HandlerRecovered,
    long Contained, long HostSwapOuts, long PagesChecked, IReadOnlyList<string> Problems, TimeSpan Elapsed,
    long PagesMerged = 0, long CowBreaks = 0, long WrongBytes = 0, long Refused = 0, long KernelInjected = 0, long VmsCycled = 0,
    IReadOnlyDictionary<OsCall, OsCallCounts>? OsCalls = null, long FreePagesReported = 0, bool Stopped = false);

public static partial class InterleavingModel
{
    private const int Pages = 64, K = 4, Guests = 2;
    // Page ownership, 16 pages a block: block 0 and 3 guest thread 0, block 1 guest thread 1 (blocks 0-1
    // are parity-protected), block 2 the host thread. Only a page's owner writes it, so its shadow is exact.
    private static int Owner(int page) => (page / 16) switch { 0 => 0, 1 => 1, 2 => Guests, _ => 0 };
    private static bool Protected(int page) => page < 32;

    private sealed class VmModel
    {
        public required GuestVm Vm;
        public required RecoveryEngine Engine;
        public readonly ulong[] Value = new ulong[Pages];      // every 8-byte word of the page; 0 = zero page
        public readonly int[] LossEpoch = new int[Pages];      // bumped when the page's content is lost
        public readonly bool[] MayBeLost = new bool[Pages];
        // group or page -> the frame injected and not yet reported; MustRecover when the page was protected
        // (read-only, covered) at that instant. A page a guest had just written has no good copy: lost.
        public readonly Dictionary<int, (HostFrame Frame, bool MustRecover)> Outstanding = new();
        public GuestPage[] Sampled = [];
        public FileStream? Disk;                                // clean copies of the host's pages (osFailures)
    }

    // Values guests write now and then, the same in both VMs and on every page, so pages merge.
    private static ulong Common(int k) => 0xC0DE_0000_0000_0000UL | (uint)k;

    // Shareable pages: the unprotected blocks (2: the host's, 3: guest thread 0's).
    private static bool Shareable(int page) => page >= 32;

    // The anomaly campaign's state (osFailures): one run at a time per process (the injector is process-wide).
    private sealed class Anomalies
    {
        public long Refused, KernelInjected, VmsCycled, WrongBytes, PagesReported;
        public KernelInjector? Kernel;
        public OsCall[] Kinds = [];
    }

    /// <summary>Kinds of OS call the campaign fails in turn (the userfaultfd, madvise and kernel reads are made
    /// only by the kernel injector: Linux, where one is available).</summary>
    private static OsCall[] FailedKinds(bool kernel) =>
        OsFailureInjector.Kinds.Where(k => kernel || k is not (OsCall.Uffd or OsCall.Advise or OsCall.Peek)).ToArray();

    // The error an in-turn failure gives: what the OS says when it runs short (Win32 codes on Windows).
    private static int ErrorFor(OsCall k) => OperatingSystem.IsWindows() ? 8 /* ERROR_NOT_ENOUGH_MEMORY */ : k switch
    {
        OsCall.Discard or OsCall.Read => 5,    // EIO
        OsCall.Write => 28,                    // ENOSPC
        OsCall.Advise or OsCall.Uffd => 11,    // EAGAIN
        OsCall.Peek => 1,                      // EPERM (a seccomp refusal)
        _ => 12,                               // ENOMEM
    };

    /// <summary>Runs <paramref name="rounds"/> rounds, or fewer: once <paramref name="stopEarly"/> is cancelled the
    /// round under way is finished and checked, and the result covers the rounds done (<see cref="ModelResult.Stopped"/>).</summary>
    public static ModelResult Run(int seed, int rounds, bool gcStress = false, IProgress<long>? progress = null, bool osFailures = false,
                                  CancellationToken stopEarly = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(rounds, 1);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        uint frames = checked((uint)(2 * Pages + 64 + rounds / 2));
        using var arena = HostArena.Create(frames, "pagelab-model");
        var models = new List<VmModel>();
        var problems = new List<string>();
        long injected = 0, reported = 0, checkedPages = 0;
        Anomalies? anomalies = osFailures ? new Anomalies() : null;
        if (anomalies is not null)
        {
            anomalies.Kernel = OperatingSystem.IsLinux() ? KernelErrorInjector.Available.Preferred : null;
            anomalies.Kinds = FailedKinds(anomalies.Kernel is not null);
            OsFailureInjector.Off();
        }
        using var stop = new CancellationTokenSource();
        Thread? gc = gcStress ? new Thread(() => { while (!stop.IsCancellationRequested) { GC.Collect(); Thread.Sleep(1); } }) { IsBackground = true } : null;
        try
        {
            for (int v = 0; v < 2; v++)
            {
                GuestVm vm = GuestVm.Create(arena, $"model{v}", Pages, poolCapacity: 8);
                var m = new VmModel { Vm = vm, Engine = new RecoveryEngine(vm, new ProtectionPolicy { GroupSize = K }) };
                vm.RefillPool();
                vm.EnableSharing();
                if (osFailures && v == 1) vm.SetFaultAround(8); // demand faults on never-used pages map their neighbours too
                vm.Back(new GuestPage(0), Pages);
                for (int p = 0; p < Pages; p++) Fill(vm, p, m.Value[p] = Word(seed, v, p, 0));
                m.Engine.Protect(Enumerable.Range(0, 32).Select(p => new GuestPage((ulong)p)).ToArray(), PageCategory.ReadMostly);
                int vmIndex = v;
                if (osFailures)
                {
                    // Clean disk copies for the host's own pages (only the host writes them, so a copy it writes is exact).
                    m.Disk = new FileStream(Path.Combine(Path.GetTempPath(), $"pagelab-model-disk-{Environment.ProcessId}-{v}"), FileMode.Create,
                        FileAccess.ReadWrite, FileShare.Read, 4096, FileOptions.DeleteOnClose);
                    m.Engine.UseDiskFile(m.Disk.SafeFileHandle);
                }
                m.Engine.Unrecoverable = g =>
                {
                    Interlocked.Increment(ref m.LossEpoch[(int)g.Value]);
                    Volatile.Write(ref m.MayBeLost[(int)g.Value], true);
                    return $"context of {g}";
                };
                models.Add(m);
            }
            gc?.Start();
            if (anomalies is not null)
            {
                // At random, every kind, all the time (2 calls in 1,000), and one read or write in 100 short;
                // besides, each round arms one kind's failure in turn (HostStep).
                OsFailureInjector.FailAtRandom((ulong)(uint)seed * 0x9E3779B97F4A7C15UL + 1, 2000, anomalies.Kinds);
                OsFailureInjector.ShortTransfers(10_000);
            }
            using var barrier = new Barrier(Guests + 1);
            var threads = new List<Thread>();
            for (int t = 0; t < Guests; t++)
            {
                int me = t;
                threads.Add(new Thread(() =>
                {
                    var rng = new Random(HashCode.Combine(seed, me));
                    for (int round = 0; round < rounds && !stop.IsCancellationRequested; round++)
                    {
                        GuestStep(models[rng.Next(2)], me, rng, problems, round, anomalies);
                        barrier.SignalAndWait();   // steps done
                        barrier.SignalAndWait();   // checked
                    }
                }) { IsBackground = true });
            }
            threads.ForEach(t => t.Start());
            var host = new Random(seed);
            var sharedByValue = new Dictionary<ulong, HostFrame>();
            int done = 0;
            for (int round = 0; round < rounds; round++)
            {
                if (anomalies is not null)
                {
                    OsCall kind = anomalies.Kinds[round % anomalies.Kinds.Length];
                    OsFailureInjector.FailNth(kind, (ulong)host.Next(1, 5), ErrorFor(kind)); // one of its next few calls, in turn
                }
                HostStep(models, sharedByValue, host, problems, round, ref injected, ref reported, anomalies, arena);
                barrier.SignalAndWait();
                checkedPages += Check(arena, models, problems, round, anomalies);
                done = round + 1;
                // Between the two barriers: the guest threads read the stop after this one and leave their loop too.
                if (problems.Count > 20 || stopEarly.IsCancellationRequested) stop.Cancel();
                barrier.SignalAndWait();
                if (stop.IsCancellationRequested) break;
                if (round % 1000 == 0) progress?.Report((long)round * (Guests + 1));
            }
            threads.ForEach(t => t.Join());
            long handler = 0, contained = 0, swaps = 0, merged = 0, cow = 0;
            foreach (VmModel m in models)
            {
                PageLab.Core.Faults.FaultCounters c = m.Vm.Counters;
                handler += (long)c.HandlerRecoveries;
                contained += (long)c.Contained;
                swaps += (long)c.HostSwapOuts;
                merged += (long)c.PagesMerged;
                cow += (long)c.CowBreaks;
            }
            IReadOnlyDictionary<OsCall, OsCallCounts>? os = anomalies is null ? null : OsFailureInjector.Counts;
            return new ModelResult((long)done * (Guests + 1), done, injected, reported, handler, contained, swaps, checkedPages,
                problems, clock.Elapsed, merged, cow, anomalies is null ? 0 : Interlocked.Read(ref anomalies.WrongBytes),
                anomalies?.Refused ?? 0, anomalies?.KernelInjected ?? 0, anomalies?.VmsCycled ?? 0, os, anomalies?.PagesReported ?? 0,
                Stopped: done < rounds && problems.Count <= 20);
        }
        finally
        {
            if (anomalies is not null) OsFailureInjector.Off();
            stop.Cancel();
            gc?.Join();
            foreach (VmModel m in models)
            {
                m.Engine.Dispose();
                m.Vm.Dispose();
                m.Disk?.Dispose();
            }
        }
    }
}
