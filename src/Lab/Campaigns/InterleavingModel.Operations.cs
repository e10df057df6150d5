// The model's operations: one random step of a guest thread (read and verify, or write its own pages) and
// of the host thread (inject, report, scrub, protect, remap, unback, swap, sample, share...), and a VM cycled.
using System.Runtime.InteropServices;
using PageLab.Core.Faults;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core;
using PageLab.Core.Recovery;

namespace PageLab.Lab.Campaigns;

public static partial class InterleavingModel
{
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
            {
                Span<ulong> words = MemoryMarshal.Cast<byte, ulong>(extra.Page(new GuestPage((ulong)p)));
                int at = words.IndexOfAnyExcept((ulong)p + 1);
                if (at < 0) continue;
                Interlocked.Increment(ref anomalies.WrongBytes);
                problems.Add($"round {round}: cycled VM page {p} reads wrong bytes (word {at} of {words.Length}: 0x{words[at]:x}, " +
                             $"{words.Length - words.Count((ulong)p + 1)} words wrong; state {extra.StateOf(new GuestPage((ulong)p))}, " +
                             $"frame {extra.Translate(new GuestPage((ulong)p))?.ToString() ?? "none"})");
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
}
