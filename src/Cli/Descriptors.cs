// File descriptors, the resource a large scenario runs out of first: every VM keeps two files open for the
// whole run (its host swap file and its guest swap file). Checked before a run, and named when one ran out.
using System.Runtime.InteropServices;

namespace PageLab.Cli;

internal static partial class Descriptors
{
    /// <summary>Files each VM keeps open while it lives: its host swap file (HostSwapFile) and its guest
    /// swap file (GuestSwapFile).</summary>
    public const int PerVm = 2;

    /// <summary>Descriptors a run needs besides its VMs': the host arena, the trace, the plot's fonts and the
    /// assemblies loaded late (the plot, the summary's JSON).</summary>
    public const int Headroom = 48;

    private const int Emfile = 24, RlimitNofile = 7;

    /// <summary>Throws an <see cref="IOException"/> saying what to do when <paramref name="vms"/> VMs would not
    /// fit under the process's descriptor limit (`ulimit -n`); nothing when the limit is unknown (not Linux).</summary>
    public static void CheckRoomFor(int vms, string what)
    {
        if (Limit() is not long limit || OpenNow() is not int open) return;
        long needed = open + (long)PerVm * vms + Headroom;
        if (needed <= limit) return;
        throw new IOException($"{what} needs about {needed} open files ({vms} VMs x {PerVm}: each keeps its host swap file and its guest swap file open, " +
                              $"plus {open} open now and {Headroom} for the run) but `ulimit -n` is {limit}; raise it (e.g. `ulimit -n {RoundUp(needed)}`) or run fewer VMs");
    }

    /// <summary>The message for a failure that came from running out of descriptors, or null when it did not:
    /// the error says so (EMFILE), or the process has none left (then even loading an assembly fails).</summary>
    public static string? Explain(Exception e)
    {
        bool said = false;
        for (Exception? x = e; x is not null; x = x.InnerException)
            said |= x.Message.Contains("Too many open files", StringComparison.Ordinal) || x is IOException { HResult: Emfile };
        if (!said && !NoneLeft()) return null;
        string limit = Limit() is long l ? $"`ulimit -n` is {l}" : "the open-file limit is reached";
        string raise = Limit() is long l2 ? $"e.g. `ulimit -n {RoundUp(l2 * 2)}`" : "`ulimit -n`";
        return $"out of file descriptors ({limit}): each VM keeps {PerVm} files open (its host swap file and its guest swap file) " +
               $"and the runtime about {Headroom} more; raise the limit ({raise}) or run fewer VMs";
    }

    /// <summary>Loads what <see cref="Explain"/> needs (the libc bindings) while descriptors are free.</summary>
    public static void Prepare()
    {
        if (!OperatingSystem.IsLinux()) return;
        _ = Limit();
        _ = NoneLeft();
        WriteStderr("");
    }

    /// <summary>Writes <paramref name="text"/> to fd 2 with write(2), bypassing the console (last resort of
    /// the error path); nothing where that is not Linux or the write fails.</summary>
    public static unsafe void WriteStderr(string text)
    {
        if (!OperatingSystem.IsLinux()) return;
        byte[] bytes = System.Text.Encoding.UTF8.GetBytes(text);
        // SAFETY: p points into bytes, pinned by fixed for the whole loop; write(2) reads at most count bytes from it.
        fixed (byte* p = bytes)
        {
            for (long done = 0; done < bytes.Length;)
            {
                long n = Write(2, p + done, bytes.Length - done);
                if (n <= 0) return;
                done += n;
            }
        }
    }

    /// <summary>False when fd 1 cannot take output: closed when pagelab started (the runtime then opened one of
    /// its own files read-only under that number) or opened read-only. True where that cannot be told.</summary>
    public static bool StdoutWritable()
    {
        if (!OperatingSystem.IsLinux()) return true;
        const int FGetfl = 3, OAccmode = 3, ORdonly = 0;
        int flags = Fcntl(1, FGetfl, 0);
        return flags != -1 && (flags & OAccmode) != ORdonly;
    }

    private static long RoundUp(long n) => Math.Max(1024, 1L << (int)Math.Ceiling(Math.Log2(n)));

    /// <summary>The soft limit on open files, null where unknown.</summary>
    internal static long? Limit()
    {
        if (!OperatingSystem.IsLinux()) return null;
        return GetRlimit(RlimitNofile, out RLimit r) == 0 && r.Current < long.MaxValue ? (long)r.Current : null;
    }

    // The descriptors open now (entries of /proc/self/fd, less the one reading it); null where unknown.
    private static int? OpenNow()
    {
        if (!OperatingSystem.IsLinux()) return null;
        try
        {
            return Directory.GetFileSystemEntries("/proc/self/fd").Length - 1;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    // True when the process cannot open one more descriptor right now (dup fails with EMFILE), or is within a
    // few of the limit: a failed assembly load frees what it opened before the error reaches us.
    private static bool NoneLeft()
    {
        if (!OperatingSystem.IsLinux()) return false;
        int fd = Dup(2);
        if (fd < 0) return Marshal.GetLastPInvokeError() == Emfile;
        _ = Close(fd); // a copy of stderr only made to probe: nothing to do if closing it fails
        return Limit() is long limit && (OpenNow() is not int open || open + Slack >= limit);
    }

    private const int Slack = 8;

    [StructLayout(LayoutKind.Sequential)]
    private struct RLimit
    {
        public ulong Current;
        public ulong Maximum;
    }

    [LibraryImport("libc.so.6", EntryPoint = "getrlimit", SetLastError = true)]
    private static partial int GetRlimit(int resource, out RLimit limit);

    [LibraryImport("libc.so.6", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(int fd, int command, int argument);

    [LibraryImport("libc.so.6", EntryPoint = "dup", SetLastError = true)]
    private static partial int Dup(int fd);

    [LibraryImport("libc.so.6", EntryPoint = "write", SetLastError = true)]
    private static unsafe partial long Write(int fd, byte* buffer, long count);

    [LibraryImport("libc.so.6", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);
}
