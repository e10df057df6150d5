// How the scheduler takes memory back from a VM over its ceiling, and in which order: ESX's (Waldspurger,
// OSDI 2002) is page sharing first (it costs the guest nothing until a write), then ballooning (the guest
// chooses what to give), and host swap last (blind: the host cannot see which pages the guest uses).

namespace PageLab.Core.Scheduling;

/// <summary>The mechanisms the scheduler may use to reclaim memory. They always act in ESX's order.</summary>
[Flags]
public enum Reclamation
{
    /// <summary>Content-based page sharing: the scanner merges identical pages of the VMs that opted in;
    /// a VM's part of the frames saved counts before its balloon inflates.</summary>
    Share = 1,
    /// <summary>Ballooning: the balloon application in the guest gives pages it reserved.</summary>
    Balloon = 2,
    /// <summary>Host swap: pages of a VM still over its ceiling (its balloon made no progress in the step,
    /// or there is none) are swapped out by the host, a batch per step. Progress is what the host got back
    /// (the VM costs fewer frames than at the previous step, or than at the start of this one if it was within
    /// its ceiling then), not pages the balloon reported: a guest that pages the balloon's pages out as fast as
    /// it reserves them gives the host nothing.</summary>
    HostSwap = 4,
}

/// <summary>The scenario's text form of <see cref="Reclamation"/>: "share,balloon,swap", any of the three,
/// comma-separated, in that order.</summary>
public static class ReclamationParse
{
    private static readonly (string Name, Reclamation Flag)[] Order =
        [("share", Reclamation.Share), ("balloon", Reclamation.Balloon), ("swap", Reclamation.HostSwap)];

    /// <summary>Reads "share,balloon,swap" (or a part of it, in that order). Throws <see cref="ArgumentException"/>
    /// naming the word that is wrong.</summary>
    public static Reclamation Parse(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
            throw new ArgumentException($"'{text}' names no mechanism; give some of share, balloon, swap, in that order (e.g. \"share,balloon,swap\")");
        Reclamation result = 0;
        int last = -1;
        foreach (string raw in text.Split(','))
        {
            string word = raw.Trim();
            int at = Array.FindIndex(Order, o => o.Name == word);
            if (at < 0)
                throw new ArgumentException($"'{word}' in '{text}' is not share, balloon or swap");
            if (at == last)
                throw new ArgumentException($"'{word}' is given twice in '{text}'");
            if (at < last)
                throw new ArgumentException($"'{word}' comes after '{Order[last].Name}' in '{text}'; the order is ESX's: share, balloon, swap");
            result |= Order[at].Flag;
            last = at;
        }
        return result;
    }

    /// <summary>The text form, e.g. "share,balloon,swap".</summary>
    public static string Format(Reclamation r) => string.Join(',', Order.Where(o => r.HasFlag(o.Flag)).Select(o => o.Name));
}
