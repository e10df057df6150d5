// The kernel's own list of this process's mappings (/proc/self/maps, Linux): what the engine's mapping
// count (its model of the kernel's VMAs, kept under vm.max_map_count) is checked against.
namespace PageLab.Core.Faults;

public static class OsMaps
{
    /// <summary>One VMA: its range, permissions ("rw-s", "---p", ...) and the file mapped ("" if anonymous).</summary>
    public readonly record struct Mapping(ulong Start, ulong End, string Perms, string Path);

    /// <summary>The VMAs that overlap [<paramref name="start"/>, + <paramref name="bytes"/>).</summary>
    public static List<Mapping> InRange(ulong start, ulong bytes)
    {
        if (!OperatingSystem.IsLinux()) throw new PlatformNotSupportedException("/proc/self/maps is Linux's");
        ulong end = start + bytes;
        var found = new List<Mapping>();
        foreach (string line in File.ReadLines("/proc/self/maps"))
        {
            // start-end perms offset dev inode [path]
            string[] f = line.Split(' ', 6, StringSplitOptions.RemoveEmptyEntries);
            int dash = f[0].IndexOf('-');
            ulong s = Convert.ToUInt64(f[0][..dash], 16), e = Convert.ToUInt64(f[0][(dash + 1)..], 16);
            if (s < end && e > start) found.Add(new Mapping(s, e, f[1], f.Length > 5 ? f[5].Trim() : ""));
        }
        return found;
    }
}
