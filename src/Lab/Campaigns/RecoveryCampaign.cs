// A seeded campaign of injected memory errors against one VM whose guest threads keep reading and
// writing: every kind of error in every kind of frame, each reported and handled, and every byte
// checked against a shadow of what the guest wrote. The numbers a campaign prints come from here.
using System.Diagnostics;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core;
using PageLab.Core.Recovery;

namespace PageLab.Lab.Campaigns;

public sealed record CampaignOptions
{
    public int Injections { get; init; } = 100_000;
    public int Seed { get; init; } = 1;
    public int GroupSize { get; init; } = 8;
    public int Readers { get; init; } = 1;
    public int Writers { get; init; } = 1;
    /// <summary>A thread that allocates and forces full GCs while faults are taken.</summary>
    public bool GcStress { get; init; }
    /// <summary>Protection: each error is injected by page protection and reported to the engine at once
    /// (every target). Kernel: each error is put under a guest page by the kernel (a poison marker) and
    /// nobody is told; a guest access (the reader, the writer, or the campaign's own read right after) takes
    /// the kernel's SIGBUS and the engine recovers or contains the page inside that fault. Only guest pages
    /// can be hit that way: read-mostly, written, disk and unprotected pages.</summary>
    public InjectionPath Via { get; init; } = InjectionPath.Protection;

    public void Validate()
    {
        if (Injections < 1) throw new ArgumentOutOfRangeException(nameof(Injections), Injections, "a campaign injects at least one error");
        if (GroupSize is < 2 or > 32) throw new ArgumentOutOfRangeException(nameof(GroupSize), GroupSize, "parity groups have 2..32 pages");
        if (Readers < 0 || Writers < 0) throw new ArgumentOutOfRangeException(nameof(Readers), $"{Readers} readers, {Writers} writers");
    }
}

public enum CampaignTarget { ReadMostlyPage, WrittenPage, DiskPage, SilentPage, UnprotectedPage, ParityFrame, FreeFrame }

/// <summary>One injection of a campaign: where, what kind, how it ended, how long handling took.</summary>
public readonly record struct CampaignSample(int Index, CampaignTarget Target, ErrorKind Kind, ErrorOutcome Outcome, bool Lost, double Micros);

public sealed record CampaignResult(
    long Injected, IReadOnlyDictionary<ErrorOutcome, long> Outcomes, IReadOnlyDictionary<CampaignTarget, long> Targets,
    long SilentFound, long Lost, long ReaderMismatches, long ReaderChecks, ulong HandlerRecoveries, ulong TrackedWrites,
    long ContextsTerminated, long Retired, double P50Micros, double P90Micros, double P99Micros,
    IReadOnlyList<string> Problems, TimeSpan Elapsed, IReadOnlyList<CampaignSample> Samples, bool Stopped = false)
{
    public long Recovered => Outcomes.GetValueOrDefault(ErrorOutcome.Recovered) + Outcomes.GetValueOrDefault(ErrorOutcome.ParityRebuilt)
                             + Outcomes.GetValueOrDefault(ErrorOutcome.FreeFrameRetired);
    public long Contained => Outcomes.GetValueOrDefault(ErrorOutcome.Contained);
}

public static class RecoveryCampaign
{
    // The VM's layout: who touches which pages decides which errors may be injected where.
    private const ulong ReadMostly = 0, ReadMostlyPages = 384;      // parity; readers verify all the time
    private const ulong Written = 384, WrittenPages = 128;          // parity; writers rewrite them
    private const ulong Disk = 512, DiskPages = 128;                // clean copy in a real file; readers
    private const ulong Silent = 640, SilentPages = 128;            // parity; corrupted without a report
    private const ulong Unprotected = 768, UnprotectedPages = 256;  // 16 contexts of 16 pages
    private const ulong ContextPages = 16;
    private const ulong VmPages = 1024;

    /// <summary>Runs the campaign. Once <paramref name="stopEarly"/> is cancelled it injects no more errors,
    /// makes the end-of-campaign checks on the ones injected, and returns them (<see cref="CampaignResult.Stopped"/>).</summary>
    public static CampaignResult Run(CampaignOptions o, IProgress<int>? progress = null, CancellationToken stopEarly = default)
    {
        o.Validate();
        var clock = Stopwatch.StartNew();
        uint frames = checked((uint)(VmPages * 2 + (ulong)o.Injections + 4096));
        using var arena = HostArena.Create(frames, "pagelab-campaign");
        GuestVm vm = GuestVm.Create(arena, "campaign", VmPages, poolCapacity: 256);
        string diskPath = Path.Combine(Path.GetTempPath(), $"pagelab-campaign-{Environment.ProcessId}-{o.Seed}");
        using var disk = new FileStream(diskPath, FileMode.Create, FileAccess.ReadWrite, FileShare.Read, 4096, FileOptions.DeleteOnClose);
        using var stop = new CancellationTokenSource();
        var threads = new List<Thread>();
        try
        {
            var rng = new Random(o.Seed);
            PageLab.Core.Faults.KernelInjector? kernel = o.Via == InjectionPath.Kernel ? KernelErrorInjector.Require() : null;
            vm.RefillPool();
            vm.Back(new GuestPage(0), VmPages);
            var version = new long[VmPages];
            for (ulong g = 0; g < VmPages; g++) Fill(vm.Page(new GuestPage(g)), g, 0);
            for (ulong g = Disk; g < Disk + DiskPages; g++) disk.Write(vm.Page(new GuestPage(g)));
            disk.Flush();

            var engine = new RecoveryEngine(vm, new ProtectionPolicy { GroupSize = o.GroupSize });
            var deadContexts = new HashSet<ulong>();
            engine.Unrecoverable = g =>
            {
                ulong ctx = (g.Value - Unprotected) / ContextPages;
                deadContexts.Add(ctx);
                return $"context {ctx}";
            };
            engine.UseDiskFile(disk.SafeFileHandle);
            engine.Protect(Pages(ReadMostly, ReadMostlyPages), PageCategory.ReadMostly);
            engine.Protect(Pages(Written, WrittenPages), PageCategory.ReadMostly);
            engine.Protect(Pages(Silent, SilentPages), PageCategory.KernelLike);
            engine.Protect(Pages(Disk, DiskPages), PageCategory.CleanWithDiskCopy, g => (long)(g.Value - Disk) * arena.PageSize);

            long readerChecks = 0, readerMismatches = 0;
            for (int i = 0; i < o.Readers; i++)
            {
                int seed = o.Seed * 31 + i;
                threads.Add(new Thread(() => Reader(vm, seed, stop.Token, ref readerChecks, ref readerMismatches)) { IsBackground = true });
            }
            for (int i = 0; i < o.Writers; i++)
            {
                int w = i;
                threads.Add(new Thread(() => Writer(vm, w, o.Writers, version, stop.Token)) { IsBackground = true });
            }
            if (o.GcStress) threads.Add(new Thread(() => GcStress(stop.Token)) { IsBackground = true });
            foreach (Thread t in threads) t.Start();

            var outcomes = new Dictionary<ErrorOutcome, long>();
            var targets = new Dictionary<CampaignTarget, long>();
            var latencies = new List<double>(o.Injections);
            var samples = new List<CampaignSample>(o.Injections);
            long lost = 0, silentFound = 0, contexts = 0;
            var problems = new List<string>();
            int n = 0;
            while (n < o.Injections)
            {
                if (n % 64 == 0)
                {
                    vm.RefillPool();
                    engine.Reprotect(coldOnly: false);
                    progress?.Report(n);
                }
                if (stopEarly.IsCancellationRequested) break; // between injections: none is half made
                long lostBefore = lost;
                var target = kernel is null ? (CampaignTarget)rng.Next(7) : KernelTargets[rng.Next(KernelTargets.Length)];
                var kind = (ErrorKind)rng.Next(4);
                (int offset, byte[] mask) = MemoryErrorInjector.Pattern(kind, arena.PageSize, rng);
                ErrorReport? report = null;
                switch (target)
                {
                    case CampaignTarget.ReadMostlyPage or CampaignTarget.WrittenPage or CampaignTarget.DiskPage when kernel is not null:
                    {
                        (ulong first, ulong count) = target switch
                        {
                            CampaignTarget.ReadMostlyPage => (ReadMostly, ReadMostlyPages),
                            CampaignTarget.WrittenPage => (Written, WrittenPages),
                            _ => (Disk, DiskPages),
                        };
                        var page = new GuestPage(first + (ulong)rng.NextInt64((long)count));
                        if (KernelErrorInjector.IntoPage(vm, page, offset, mask, onlyIfProtected: true, kernel) is not HostFrame bad) continue;
                        // Nobody is told: this guest read (or the reader's, or the writer's write) takes the SIGBUS.
                        TimeSpan took = GuestTouch(vm, page);
                        engine.CollectHandlerEvents();
                        bool recovered = vm.Translate(page) != bad && arena.StateOf(bad) == FrameState.Retired && !vm.IsLost(page);
                        report = new ErrorReport(bad, recovered ? ErrorOutcome.Recovered : ErrorOutcome.Contained, page, took);
                        if (!recovered) lost++;
                        else if (target != CampaignTarget.WrittenPage && !Holds(arena, vm, page, 0)) lost++;
                        break;
                    }
                    case CampaignTarget.UnprotectedPage when kernel is not null:
                    {
                        ulong ctx = (ulong)rng.NextInt64((long)(UnprotectedPages / ContextPages));
                        if (deadContexts.Contains(ctx)) RestartContext(vm, ctx, deadContexts);
                        var page = new GuestPage(Unprotected + ctx * ContextPages + (ulong)rng.NextInt64((long)ContextPages));
                        HostFrame bad = KernelErrorInjector.IntoPage(vm, page, offset, mask, how: kernel)!.Value;
                        int before = deadContexts.Count;
                        TimeSpan took = GuestTouch(vm, page);
                        engine.CollectHandlerEvents();    // the handler's event ends the context
                        bool contained = vm.IsLost(page) && vm.Translate(page) != bad && arena.StateOf(bad) == FrameState.Retired
                                         && deadContexts.Count == before + 1 && vm.Page(page).IndexOfAnyExcept((byte)0) < 0;
                        report = new ErrorReport(bad, ErrorOutcome.Contained, page, took);
                        if (!contained) lost++;
                        else
                        {
                            contexts++;
                            if (!ContextEndedAlone(arena, vm, ctx, deadContexts)) lost++;
                        }
                        break;
                    }
                    case CampaignTarget.ReadMostlyPage or CampaignTarget.WrittenPage or CampaignTarget.DiskPage:
                    {
                        (ulong first, ulong count) = target switch
                        {
                            CampaignTarget.ReadMostlyPage => (ReadMostly, ReadMostlyPages),
                            CampaignTarget.WrittenPage => (Written, WrittenPages),
                            _ => (Disk, DiskPages),
                        };
                        var page = new GuestPage(first + (ulong)rng.NextInt64((long)count));
                        // Only a page protected at this instant: a page being written is not (yet) covered.
                        if (MemoryErrorInjector.IntoPage(vm, page, offset, mask, onlyIfProtected: true) is not HostFrame bad) continue;
                        report = engine.Report(bad);
                        if (report.Outcome != ErrorOutcome.Recovered) lost++;
                        else if (target != CampaignTarget.WrittenPage && !Holds(arena, vm, page, 0)) lost++;
                        break;
                    }
                    case CampaignTarget.SilentPage:
                    {
                        var page = new GuestPage(Silent + (ulong)rng.NextInt64((long)SilentPages));
                        if (vm.Translate(page) is not HostFrame f || vm.StateOf(page) != GuestPageState.Tracked) continue;
                        MemoryErrorInjector.IntoFrame(arena, f, offset, mask);
                        var t0 = Stopwatch.GetTimestamp();
                        List<ErrorReport> found = engine.Scrub();
                        report = new ErrorReport(f, found.Count == 1 ? found[0].Outcome : ErrorOutcome.Contained, page, Stopwatch.GetElapsedTime(t0));
                        if (found.Count != 1 || found[0].Page != page || !Holds(arena, vm, page, 0)) lost++;
                        else silentFound++;
                        break;
                    }
                    case CampaignTarget.UnprotectedPage:
                    {
                        ulong ctx = (ulong)rng.NextInt64((long)(UnprotectedPages / ContextPages));
                        if (deadContexts.Contains(ctx)) RestartContext(vm, ctx, deadContexts);
                        var page = new GuestPage(Unprotected + ctx * ContextPages + (ulong)rng.NextInt64((long)ContextPages));
                        HostFrame bad = MemoryErrorInjector.IntoPage(vm, page, offset, mask)!.Value;
                        int before = deadContexts.Count;
                        report = engine.Report(bad);
                        if (report.Outcome != ErrorOutcome.Contained || deadContexts.Count != before + 1) lost++;
                        else
                        {
                            contexts++;
                            if (!ContextEndedAlone(arena, vm, ctx, deadContexts)) lost++;
                        }
                        break;
                    }
                    case CampaignTarget.ParityFrame:
                    {
                        var parity = new HostFrame(engine.ParityFrames.Keys.ElementAt(rng.Next(engine.ParityFrames.Count)));
                        MemoryErrorInjector.IntoFrame(arena, parity, offset, mask);
                        report = engine.Report(parity);
                        if (report.Outcome != ErrorOutcome.ParityRebuilt) lost++;
                        break;
                    }
                    case CampaignTarget.FreeFrame:
                    {
                        HostFrame free = arena.Allocate(1)[0];
                        arena.Release([free]);
                        MemoryErrorInjector.IntoFrame(arena, free, offset, mask);
                        report = engine.Report(free);
                        if (report.Outcome != ErrorOutcome.FreeFrameRetired) lost++;
                        break;
                    }
                }
                samples.Add(new CampaignSample(n, target, kind, report!.Outcome, lost > lostBefore, report.Latency.TotalMicroseconds));
                n++;
                targets[target] = targets.GetValueOrDefault(target) + 1;
                outcomes[report!.Outcome] = outcomes.GetValueOrDefault(report.Outcome) + 1;
                latencies.Add(report.Latency.TotalMicroseconds);
            }
            stop.Cancel();
            foreach (Thread t in threads) t.Join();
            progress?.Report(n);

            // Final checks against the shadow: every protected page holds what its guest last wrote.
            engine.Reprotect(coldOnly: false);
            engine.CollectHandlerEvents();
            for (ulong g = 0; g < Unprotected; g++)
                if (!Holds(arena, vm, new GuestPage(g), Interlocked.Read(ref version[g]))) { lost++; problems.Add($"gpage {g} does not hold version {version[g]}"); }
            if (vm.ScrubParity() is { Count: > 0 } badGroups) problems.Add($"parity of groups {string.Join(", ", badGroups)} is not the XOR of their members");
            foreach (uint f in engine.RetiredFrames)
                if (arena.StateOf(new HostFrame(f)) != FrameState.Retired) problems.Add($"retired frame {f} is {arena.StateOf(new HostFrame(f))}");
            problems.AddRange(FrameAccounting.Check(arena, [vm]));
            if (arena.Counts.Guest + arena.Counts.Parity + arena.Counts.Free + arena.Counts.Retired != arena.FrameCount)
                problems.Add("frames are missing from the accounting");
            latencies.Sort();
            PageLab.Core.Faults.FaultCounters counters = vm.Counters;
            return new CampaignResult(n, outcomes, targets, silentFound, lost, readerMismatches, readerChecks,
                counters.HandlerRecoveries, counters.TrackedWrites, contexts, engine.RetiredFrames.Count,
                Percentile(latencies, 0.50), Percentile(latencies, 0.90), Percentile(latencies, 0.99), problems, clock.Elapsed, samples,
                Stopped: n < o.Injections);
        }
        finally
        {
            stop.Cancel();
            foreach (Thread t in threads) if (t.IsAlive) t.Join();
            vm.Dispose();
        }
    }

    /// <summary>The targets a kernel injection can hit: guest pages (a poison marker needs a guest mapping).</summary>
    private static readonly CampaignTarget[] KernelTargets =
        [CampaignTarget.ReadMostlyPage, CampaignTarget.WrittenPage, CampaignTarget.DiskPage, CampaignTarget.UnprotectedPage];

    // Starts a new context in a dead one's pages (fresh frames; the guest reloads them).
    // After a context was ended for an error: its pages go, and the next context (unless it is dead too)
    // must still hold its own bytes: only that context's pages were taken.
    private static bool ContextEndedAlone(HostArena arena, GuestVm vm, ulong ctx, HashSet<ulong> deadContexts)
    {
        vm.Unback(new GuestPage(Unprotected + ctx * ContextPages), ContextPages);
        ulong other = Unprotected + ((ctx + 1) % (UnprotectedPages / ContextPages)) * ContextPages;
        return deadContexts.Contains((other - Unprotected) / ContextPages) || Holds(arena, vm, new GuestPage(other), 0);
    }

    private static void RestartContext(GuestVm vm, ulong ctx, HashSet<ulong> deadContexts)
    {
        GuestPage first = new(Unprotected + ctx * ContextPages);
        vm.Back(first, ContextPages);
        for (ulong g = first.Value; g < first.Value + ContextPages; g++) Fill(vm.Page(new GuestPage(g)), g, 0);
        deadContexts.Remove(ctx);
    }

    // A guest read of one word of the page through its guest view: the access that takes the kernel's
    // SIGBUS if no other guest thread got there first. Returns how long it took.
    private static TimeSpan GuestTouch(GuestVm vm, GuestPage page)
    {
        long t0 = Stopwatch.GetTimestamp();
        _ = Volatile.Read(ref System.Runtime.InteropServices.MemoryMarshal.GetReference(vm.Page(page)));
        return Stopwatch.GetElapsedTime(t0);
    }

    private static GuestPage[] Pages(ulong first, ulong count) =>
        Enumerable.Range(0, (int)count).Select(i => new GuestPage(first + (ulong)i)).ToArray();

    private static ulong Word(ulong page, long version) => (page + 1) * 0x9E3779B97F4A7C15UL ^ (ulong)version * 0xC2B2AE3D27D4EB4FUL;

    private static void Fill(Span<byte> page, ulong g, long version) =>
        System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(page).Fill(Word(g, version));

    // Checks a page through the host view of its current frame (no guest access, so no fault).
    private static bool Holds(HostArena arena, GuestVm vm, GuestPage g, long version)
    {
        if (vm.Translate(g) is not HostFrame f) return false;
        ulong want = Word(g.Value, version);
        foreach (ulong w in System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(arena.FrameBytes(f)))
            if (w != want) return false;
        return true;
    }

    // Guest readers: read-mostly and disk pages, through the guest view, every word checked. A page
    // being recovered makes the read fault and wait in the handler; it must never see a bad word.
    private static void Reader(GuestVm vm, int seed, CancellationToken stop, ref long checks, ref long mismatches)
    {
        var rng = new Random(seed);
        while (!stop.IsCancellationRequested)
        {
            ulong g = rng.Next(2) == 0 ? ReadMostly + (ulong)rng.NextInt64((long)ReadMostlyPages) : Disk + (ulong)rng.NextInt64((long)DiskPages);
            ReadOnlySpan<ulong> words = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(vm.Page(new GuestPage(g)));
            ulong want = Word(g, 0);
            foreach (ulong w in words)
                if (w != want) { Interlocked.Increment(ref mismatches); break; }
            Interlocked.Increment(ref checks);
        }
    }

    // Guest writers: each rewrites its share of the written pages with the next version (a real write
    // fault on a covered page), then records the version in the shadow.
    private static void Writer(GuestVm vm, int index, int writers, long[] version, CancellationToken stop)
    {
        var rng = new Random(index + 1000);
        while (!stop.IsCancellationRequested)
        {
            ulong g = Written + (ulong)(rng.Next((int)WrittenPages / writers) * writers + index);
            long v = version[g] + 1;
            Fill(vm.Page(new GuestPage(g)), g, v);
            Interlocked.Exchange(ref version[g], v);
            if (rng.Next(8) == 0) Thread.Yield();
        }
    }

    private static void GcStress(CancellationToken stop)
    {
        var keep = new List<byte[]>();
        while (!stop.IsCancellationRequested)
        {
            for (int i = 0; i < 100; i++) keep.Add(new byte[512]);
            if (keep.Count > 10_000) keep.Clear();
            GC.Collect();
            Thread.Sleep(1); // hundreds of full collections a second, yet the guests still get the CPU
        }
    }

    private static double Percentile(List<double> sorted, double p) =>
        sorted.Count == 0 ? 0 : sorted[Math.Min(sorted.Count - 1, (int)(p * sorted.Count))];
}
