// The model's oracle: the shadow values pages are filled with, a page read back against its shadow, and
// the check at each quiescent point (bytes, parity, sharer counts, frame accounting, the engine's tables).
using System.Runtime.InteropServices;
using PageLab.Core.Faults;
using PageLab.Core.Guest;
using PageLab.Core.Host;
using PageLab.Core;

namespace PageLab.Lab.Campaigns;

public static partial class InterleavingModel
{
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
