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
using System.Runtime.InteropServices;
using PageLab.Core.Faults;
using PageLab.Core.Guest;
using PageLab.Core.Host;

namespace PageLab.Core.Recovery;

public sealed record ModelResult(long Operations, long Rounds, long Injected, long Reported, long HandlerRecovered,
    long Contained, long HostSwapOuts, long PagesChecked, IReadOnlyList<string> Problems, TimeSpan Elapsed,
    long PagesMerged = 0, long CowBreaks = 0, long WrongBytes = 0, long Refused = 0, long KernelInjected = 0, long VmsCycled = 0,
    IReadOnlyDictionary<OsCall, OsCallCounts>? OsCalls = null, long FreePagesReported = 0, bool Stopped = false);

public static class InterleavingModel
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
                Faults.FaultCounters c = m.Vm.Counters;
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

    private static ulong Word(int seed, int vm, int page, long n) =>
        ((ulong)HashCode.Combine(seed, vm, page, n) << 32 | (uint)HashCode.Combine(n, page)) | 1;

    private static void Fill(GuestVm vm, int page, ulong value) =>
        MemoryMarshal.Cast<byte, ulong>(vm.Page(new GuestPage((ulong)page))).Fill(value);

    // Reads a page as its guest would and says what is wrong with it, if anything.
    private static string? Verify(VmModel m, int page)
    {
        var g = new GuestPage((ulong)page);
        ulong want = m.Value[page];
        foreach (ulong w in MemoryMarshal.Cast<byte, ulong>(m.Vm.Page(g)))
        {
            if (w == want) continue;
            // Read after the zeros were seen: a loss is announced (MayBeLost) before its zeros can appear,
            // so a flag read before the page could miss a loss that happened while it was being read.
            bool lenient = Volatile.Read(ref m.MayBeLost[page]);
            if (w == 0 && (lenient || m.Vm.IsLost(g))) continue;
            return $"{m.Vm.Name} {g} ({m.Vm.StateOf(g)}) reads {w:x16}, expected {want:x16}{(lenient ? " or 0" : "")}";
        }
        return null;
    }

    private static void GuestStep(VmModel m, int me, Random rng, List<string> problems, int round, Anomalies? anomalies)
    {
        int[] mine = Enumerable.Range(0, Pages).Where(p => Owner(p) == me).ToArray();
        int page = mine[rng.Next(mine.Length)];
        try
        {
            if (rng.Next(2) == 0)
            {
                if (Verify(m, page) is string bad)
                {
                    if (anomalies is not null) Interlocked.Increment(ref anomalies.WrongBytes);
                    lock (problems) problems.Add($"round {round}: guest {me}: {bad}");
                }
                return;
            }
            int epoch = Volatile.Read(ref m.LossEpoch[page]);
            // A value both VMs' pages may hold (so the host can merge them), or one of this page's own.
            ulong value = rng.Next(2) == 0 ? Common(rng.Next(4)) : Word(m.Vm.Id, me, page, rng.NextInt64());
            Fill(m.Vm, page, value);
            m.Value[page] = value;
            // Lost half way through the write (the host contained it meanwhile): parts may read as zero. A
            // loss announced between the epoch check and the flag's store is caught by checking again.
            Volatile.Write(ref m.MayBeLost[page], Volatile.Read(ref m.LossEpoch[page]) != epoch);
            if (Volatile.Read(ref m.LossEpoch[page]) != epoch) Volatile.Write(ref m.MayBeLost[page], true);
        }
        catch (Exception e) { lock (problems) problems.Add($"round {round}: guest {me}: {e.GetType().Name}: {e.Message}"); }
    }

    // sharedByValue: shared frames the host made, by content (entries go stale; the engine checks every merge).
    private static void HostStep(List<VmModel> models, Dictionary<ulong, HostFrame> sharedByValue, Random rng, List<string> problems, int round,
        ref long injected, ref long reported, Anomalies? anomalies, HostArena arena)
    {
        VmModel m = models[rng.Next(models.Count)];
        GuestVm vm = m.Vm;
        int page = rng.Next(Pages);
        var g = new GuestPage((ulong)page);
        int op = rng.Next(anomalies is null ? 15 : 19);
        try
        {
            switch (op)
            {
                case 0 or 1: // an error in a page, at most one unreported per parity group
                {
                    int key = Protected(page) ? -1 - page / K : page;
                    if (m.Outstanding.ContainsKey(key)) break;
                    (int offset, byte[] mask) = MemoryErrorInjector.Pattern((ErrorKind)rng.Next(4), vm.Arena.PageSize, rng);
                    bool onlyProtected = Protected(page) && rng.Next(2) == 0;
                    // A host page protected by its disk copy must come back too (only the host writes it, so it
                    // stays protected until the error is handled).
                    bool diskCopy = m.Disk is not null && Owner(page) == Guests && vm.StateOf(g) == GuestPageState.Tracked;
                    if (vm.Inject(g, offset, mask, onlyProtected) is HostFrame hit)
                    {
                        m.Outstanding[key] = (hit, onlyProtected || diskCopy);
                        injected++;
                    }
                    break;
                }
                case 2 or 3: // a report
                {
                    if (m.Outstanding.Count == 0) break;
                    int key = m.Outstanding.Keys.ElementAt(rng.Next(m.Outstanding.Count));
                    (HostFrame frame, bool mustRecover) = m.Outstanding[key];
                    m.Outstanding.Remove(key);
                    ErrorReport r;
                    try { r = m.Engine.Report(frame); }
                    catch (Exception e) when (anomalies is not null && Refused(e))
                    {
                        m.Outstanding[key] = (frame, mustRecover); // still to be reported: the next report tries again
                        throw;
                    }
                    reported++;
                    if (mustRecover && r.Outcome != ErrorOutcome.Recovered)
                        problems.Add($"round {round}: {vm.Name}: a protected page's error ended {r.Outcome}");
                    break;
                }
                case 4: // an error in a parity frame, reported at once (its group has no other)
                {
                    var groups = m.Engine.ParityFrames;
                    (uint parity, int group) = groups.ElementAt(rng.Next(groups.Count));
                    if (m.Outstanding.Keys.Any(k => k < 0 && m.Vm.GroupOf(new GuestPage((ulong)(-1 - k) * K)) == group)) break;
                    if (Enumerable.Range(0, 32).Any(p => m.Vm.StateOf(new GuestPage((ulong)p)) == GuestPageState.Poisoned)) break;
                    MemoryErrorInjector.IntoFrame(vm.Arena, new HostFrame(parity), rng.Next(vm.Arena.PageSize), [0xA5]);
                    injected++;
                    ErrorReport r = m.Engine.Report(new HostFrame(parity));
                    reported++;
                    if (r.Outcome != ErrorOutcome.ParityRebuilt) problems.Add($"round {round}: {vm.Name}: parity error ended {r.Outcome}");
                    break;
                }
                case 5:
                    foreach (ErrorReport r in m.Engine.Scrub())
                        if (m.Outstanding.Values.Any(o => o.Frame == r.Frame && o.MustRecover) && r.Outcome != ErrorOutcome.Recovered)
                            problems.Add($"round {round}: {vm.Name}: scrub ended {r.Page} {r.Outcome}");
                    foreach (var (key, o) in m.Outstanding.ToArray())
                        if (vm.Arena.StateOf(o.Frame) == FrameState.Retired) m.Outstanding.Remove(key);
                    break;
                case 6:
                    m.Engine.Reprotect(coldOnly: rng.Next(2) == 0);
                    break;
                case 7: // the host's own pages: write, unback, back, remap (content kept)
                {
                    int hp = 32 + rng.Next(16);
                    var hg = new GuestPage((ulong)hp);
                    if (vm.StateOf(hg) == GuestPageState.Poisoned) break; // its report comes first
                    // A loss the engine flagged (contained, or ended at the mapping budget) is heard before the
                    // page is reused: a back or remap starts the page afresh and clears its lost flag, and the
                    // shadow learns of the loss only from the event (Unrecoverable).
                    if (vm.IsLost(hg)) m.Engine.CollectHandlerEvents();
                    switch (rng.Next(5))
                    {
                        case 0:
                            ulong value = Word(vm.Id, 9, hp, rng.NextInt64());
                            Fill(vm, hp, value);
                            m.Value[hp] = value;
                            m.MayBeLost[hp] = false;
                            break;
                        case 1:
                            vm.Unback(hg, 1);
                            m.Value[hp] = 0;
                            break;
                        case 2:
                            if (vm.StateOf(hg) == GuestPageState.Unbacked) vm.Back(hg, 1);
                            break;
                        case 3:
                            // A page the kernel poisoned: its frame is not its content, never copied as such.
                            if (vm.Translate(hg) is not HostFrame old || vm.IsKernelPoisoned(hg)) break;
                            HostFrame fresh = vm.Arena.Allocate(1)[0];
                            vm.Arena.FrameBytes(old).CopyTo(vm.Arena.FrameBytes(fresh));
                            HostFrame[] back;
                            try { back = vm.Map(hg, [fresh]); }
                            catch
                            {
                                vm.Arena.ReleaseOrZero([fresh]); // refused: the page keeps its frame, the copy goes
                                throw;
                            }
                            vm.Arena.ReleaseOrZero(back);
                            break;
                        case 4:
                        {
                            // Free page reporting, the host's side as FreePageReporting.Pass does it: the guest
                            // freed the page (its content is gone), the host unmaps it and gives the frame back.
                            if (vm.StateOf(hg) != GuestPageState.Backed || m.Outstanding.ContainsKey(hp)) break;
                            var taken = new HostFrame[1];
                            int n = vm.Unmap(hg, 1, taken);
                            m.Value[hp] = 0; // unmapped: a demand-zero page from here on
                            if (n == 1) vm.Arena.ReleaseOrZero(taken); // punched to zero, or zeroed in place if it cannot be
                            if (anomalies is not null) anomalies.PagesReported++;
                            break;
                        }
                    }
                    break;
                }
                case 8:
                    vm.HostSwapOut(rng.Next(1, 9));
                    break;
                case 9: // working-set sampling
                    if (m.Sampled.Length > 0) vm.CollectSample(m.Sampled, new SampleResult[m.Sampled.Length]);
                    m.Sampled = Enumerable.Range(0, 8).Select(_ => new GuestPage((ulong)rng.Next(Pages))).Distinct().ToArray();
                    vm.Sample(m.Sampled);
                    break;
                case 10:
                    vm.SetFrameLimit(rng.Next(3) == 0 ? null : (ulong)rng.Next(8, 80));
                    break;
                case 11:
                    vm.RefillPool(rng.Next(1, 9));
                    break;
                case 12 or 13: // merge a shareable page onto a shared frame of the same content, or make one
                {
                    int sp = 32 + rng.Next(32);
                    var sg = new GuestPage((ulong)sp);
                    // The shadow is read racily for a guest's page: the engine compares the bytes anyway.
                    ulong value = m.Value[sp];
                    if (sharedByValue.TryGetValue(value, out HostFrame f) && vm.Arena.StateOf(f) == FrameState.Shared &&
                        vm.TryShare(sg, f) != ShareResult.NotEligible)
                        break;
                    if (vm.ShareCreate(sg) is HostFrame made) sharedByValue[value] = made;
                    break;
                }
                case 14:
                    if (rng.Next(3) != 0) { vm.Unshare(new GuestPage((ulong)(32 + rng.Next(32))), 1); break; }
                    // An error in a shared frame whose sharers are all the host's pages (a guest read of a
                    // sharer before the report would see the bad bytes: no poison marks a shared frame).
                    foreach (HostFrame f in sharedByValue.Values.Distinct().ToArray())
                    {
                        if (vm.Arena.StateOf(f) != FrameState.Shared || !OnlyHostPagesShare(models, f)) continue;
                        bool zero = MemoryMarshal.Cast<byte, ulong>(vm.Arena.FrameBytes(f)).IndexOfAnyExcept(0UL) < 0;
                        MemoryErrorInjector.IntoFrame(vm.Arena, f, rng.Next(vm.Arena.PageSize), [0x5A]);
                        injected++;
                        ErrorReport r = m.Engine.Report(f);
                        reported++;
                        if (r.Outcome != (zero ? ErrorOutcome.Recovered : ErrorOutcome.Contained))
                            problems.Add($"round {round}: an error in shared {f} (zero: {zero}) ended {r.Outcome}");
                        if (vm.Arena.StateOf(f) != FrameState.Retired) problems.Add($"round {round}: shared {f} with an error is {vm.Arena.StateOf(f)}");
                        foreach (VmModel o in models) o.Engine.CollectHandlerEvents(); // every VM hears of its lost pages now
                        break;
                    }
                    break;
                case 15 or 16: // an error the kernel delivers: a poison marker under any page, protected or not
                {
                    if (anomalies?.Kernel is not KernelInjector how) break;
                    // Under a protected page (parity, or a host page's disk copy) it must come back; under an
                    // unprotected one it is contained (zero and flagged lost) wherever it is first met: a guest
                    // access, the host's swap, a remap, a share or a report (a kernel-poisoned page is bad
                    // everywhere, never swapped, remapped or shared as good data).
                    for (int tries = 0; tries < 8; tries++) // a page not in a group (or itself) with an error already
                    {
                        int kp = rng.Next(Pages), key = Protected(kp) ? -1 - kp / K : kp;
                        if (m.Outstanding.ContainsKey(key)) continue; // one error per parity group at a time
                        var kg = new GuestPage((ulong)kp);
                        bool onlyProtected = rng.Next(2) == 0;
                        bool diskCopy = m.Disk is not null && Owner(kp) == Guests && vm.StateOf(kg) == GuestPageState.Tracked;
                        (int offset, byte[] mask) = MemoryErrorInjector.Pattern((ErrorKind)rng.Next(4), vm.Arena.PageSize, rng);
                        if (KernelErrorInjector.IntoPage(vm, kg, offset, mask, onlyIfProtected: onlyProtected, how) is not HostFrame hit) continue;
                        // Nobody is told: a guest access takes the SIGBUS and recovers or contains it in the handler, or a report does.
                        m.Outstanding[key] = (hit, onlyProtected || diskCopy);
                        anomalies.KernelInjected++;
                        injected++;
                        break;
                    }
                    break;
                }
                case 17 when rng.Next(8) == 0: // a VM created, used and destroyed (region lifetime under failing calls)
                    CycleVm(arena, problems, round, anomalies!);
                    break;
                case 18: // a host page's clean copy written to disk and the page protected by it
                {
                    int hp = 32 + rng.Next(16);
                    var hg = new GuestPage((ulong)hp);
                    if (m.Disk is null || vm.StateOf(hg) != GuestPageState.Backed || m.Outstanding.ContainsKey(hp)) break;
                    long at = (long)hp * vm.Arena.PageSize;
                    // Copied by a user-space read first: the kernel's own read of a page with a poison marker
                    // fails with EFAULT, where a read of ours takes the SIGBUS the engine repairs.
                    byte[] copy = vm.Page(hg).ToArray();
                    m.Disk.Position = at;
                    m.Disk.Write(copy);
                    m.Disk.Flush();
                    m.Engine.Protect([hg], PageCategory.CleanWithDiskCopy, _ => at);
                    break;
                }
            }
        }
        catch (Exception e) when (anomalies is not null && Refused(e)) { anomalies.Refused++; }
        catch (Exception e) { problems.Add($"round {round}: host op {op} on {vm.Name} {g}: {e.GetType().Name}: {e.Message}"); }
    }

    // An operation refused because an OS call failed (the injector's, or a real shortage).
    private static bool Refused(Exception e) => e is PageLab.Native.ErrnoException || e.InnerException is PageLab.Native.ErrnoException;

    // A third VM: created, backed, written, read back and destroyed, each step of which may be refused; after
    // it is gone no view of the arena may remain in its range (its frames are free for other VMs).
    private static void CycleVm(HostArena arena, List<string> problems, int round, Anomalies anomalies)
    {
        GuestVm extra = GuestVm.Create(arena, "cycled", 16, 4, hostSwap: false);
        ulong lo = (ulong)extra.Base, bytes = 16UL * (ulong)arena.PageSize;
        try
        {
            extra.Back(new GuestPage(0), 8);
            for (int p = 0; p < 16; p++) Fill(extra, p, (ulong)p + 1); // pages 8..15: demand faults
            for (int p = 0; p < 16; p++)
                if (MemoryMarshal.Cast<byte, ulong>(extra.Page(new GuestPage((ulong)p))).IndexOfAnyExcept((ulong)p + 1) >= 0)
                {
                    Interlocked.Increment(ref anomalies.WrongBytes);
                    problems.Add($"round {round}: cycled VM page {p} reads wrong bytes");
                }
        }
        finally
        {
            extra.Dispose();
            anomalies.VmsCycled++;
            if (OperatingSystem.IsLinux())
                foreach (OsMaps.Mapping left in OsMaps.InRange(lo, bytes))
                    // An accessible view only: when the range cannot be made a hole (a failed mmap) the engine
                    // makes its views inaccessible instead (---s), which no stale span can read or write through.
                    if (left.Path.Contains("pagelab-model", StringComparison.Ordinal) && !left.Perms.StartsWith("---", StringComparison.Ordinal))
                        problems.Add($"round {round}: a destroyed VM's range still maps the arena accessibly: {left}");
        }
    }

    // Every sharer of f is a host page: as many host pages map it as its sharer count says (a guest page whose
    // copy-on-write is under way no longer reads Shared but still holds its sharer, and may free the frame).
    private static bool OnlyHostPagesShare(List<VmModel> models, HostFrame f)
    {
        long hostSharers = 0;
        foreach (VmModel m in models)
            for (int p = 0; p < Pages; p++)
            {
                var g = new GuestPage((ulong)p);
                if (m.Vm.StateOf(g) != GuestPageState.Shared || m.Vm.Translate(g) != f) continue;
                if (Owner(p) != Guests) return false;
                hostSharers++;
            }
        return hostSharers > 0 && hostSharers == models[0].Vm.Arena.SharersOf(f);
    }

    // At a quiescent point: every page reads as its shadow says, parity is true, every frame is accounted for.
    private static long Check(HostArena arena, List<VmModel> models, List<string> problems, int round, Anomalies? anomalies)
    {
        long n = 0;
        foreach (string p in FrameAccounting.Check(arena, models.Select(m => m.Vm).ToList()))
            problems.Add($"round {round}: accounting: {p}");
        if (anomalies is not null && EngineTables.CheckArena(arena) is string broken) problems.Add($"round {round}: arena tables: {broken}");
        foreach (VmModel m in models)
        {
            for (int p = 0; p < Pages; p++)
            {
                if (m.Vm.StateOf(new GuestPage((ulong)p)) == GuestPageState.Poisoned) continue; // awaiting its report
                if (Verify(m, p) is string bad)
                {
                    if (anomalies is not null) Interlocked.Increment(ref anomalies.WrongBytes);
                    problems.Add($"round {round}: check: {bad}");
                }
                n++;
            }
            foreach (int group in m.Vm.ScrubParity()) problems.Add($"round {round}: {m.Vm.Name} parity group {group} is wrong");
            if (anomalies is null) continue;
            if (EngineTables.CheckRegion(m.Vm) is string wrong) problems.Add($"round {round}: region tables: {wrong}");
            if (OperatingSystem.IsLinux())
            {
                long model = m.Vm.MappingCount, kernel = OsMaps.InRange((ulong)m.Vm.Base, Pages * (ulong)arena.PageSize).Count;
                if (model != kernel) problems.Add($"round {round}: {m.Vm.Name} counts {model} mappings, /proc/self/maps has {kernel}");
            }
        }
        return n;
    }
}
