// Output files (--trace, --json, --csv, --plot) are locked while a command writes them, so a second PageLab
// process given the same file is refused instead of interleaving with the first (Linux open-file-description locks).
using System.Runtime.InteropServices;

namespace PageLab.Cli;

/// <summary>Write locks on a command's output files, held until disposed. Each lock is an advisory
/// open-file-description lock (fcntl F_OFD_SETLK) on the file itself: another process's lock on it makes
/// <see cref="Take"/> refuse the file; the kernel drops the locks when the process ends, however it ends.
/// They do not interact with .NET's own flock(LOCK_SH) on the files this process writes. Linux only:
/// elsewhere nothing is locked.</summary>
internal sealed partial class OutputLocks : IDisposable
{
    private readonly List<(FileStream File, bool Created)> _held = new();

    private OutputLocks()
    {
    }

    /// <summary>Locks every named output (null and "-" are skipped); <see cref="UsageException"/> naming the
    /// option and file when another process holds one. A file that did not exist is created empty, and
    /// removed again on <see cref="Dispose"/> if nothing was written to it.</summary>
    public static OutputLocks Take(params (string Option, string? Path)[] outputs)
    {
        var locks = new OutputLocks();
        if (!OperatingSystem.IsLinux()) return locks;
        try
        {
            foreach ((string option, string? path) in outputs)
            {
                if (path is null or "-") continue;
                bool created = !File.Exists(path);
                var file = new FileStream(path, FileMode.OpenOrCreate, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete, 1);
                if (!TryLock(file, out int errno))
                {
                    file.Dispose();
                    // Two names of one file given to this process (a hard link, a symlink) conflict with our own lock.
                    if (errno is Eagain or Eacces && locks._held.FirstOrDefault(h => OutputPaths.SameFile(h.File.Name, path)).File is FileStream mine)
                        throw new UsageException($"{option} {path}: is the same file as another output of this command ({mine.Name}); give each its own");
                    if (errno is Eagain or Eacces)
                        throw new UsageException($"{option} {path}: another PageLab process is writing this file; wait for it to end or give another file");
                    throw new UsageException($"{option} {path}: cannot be locked for writing ({Marshal.GetPInvokeErrorMessage(errno)})");
                }
                locks._held.Add((file, created));
            }
            return locks;
        }
        catch
        {
            locks.Dispose();
            throw;
        }
    }

    /// <summary>Removes the files <see cref="Take"/> created that are still empty (for a process exiting at
    /// once, e.g. on a second Ctrl-C, which does not get to <see cref="Dispose"/>).</summary>
    public void RemoveUnwritten()
    {
        foreach ((FileStream file, bool created) in _held.ToArray())
        {
            try
            {
                if (created && new FileInfo(file.Name).Length == 0) File.Delete(file.Name);
            }
            catch (IOException)
            {
                // Being written or already gone: not an unwritten file of ours.
            }
        }
    }

    public void Dispose()
    {
        foreach ((FileStream file, bool created) in _held)
        {
            string path = file.Name;
            bool empty = file.Length == 0;
            file.Dispose(); // closing the descriptor releases its lock
            if (created && empty)
            {
                try
                {
                    File.Delete(path);
                }
                catch (IOException)
                {
                    // Someone else's file by now, or gone: nothing of ours to remove.
                }
            }
        }
        _held.Clear();
    }

    private const int FOfdSetlk = 37, FWrlck = 1, SeekSet = 0, Eagain = 11, Eacces = 13;

    // struct flock on x86-64 and arm64 Linux: l_type, l_whence (short), l_start, l_len (off_t), l_pid (pid_t).
    [StructLayout(LayoutKind.Sequential)]
    private struct Flock
    {
        public short Type;
        public short Whence;
        public long Start;
        public long Length;
        public int Pid;
    }

    private static bool TryLock(FileStream file, out int errno)
    {
        // The whole file, now and as it grows (length 0); l_pid must be 0 for OFD locks.
        var request = new Flock { Type = FWrlck, Whence = SeekSet, Start = 0, Length = 0, Pid = 0 };
        bool added = false;
        file.SafeFileHandle.DangerousAddRef(ref added);
        try
        {
            int rc = Fcntl((int)file.SafeFileHandle.DangerousGetHandle(), FOfdSetlk, ref request);
            errno = rc == 0 ? 0 : Marshal.GetLastPInvokeError();
            return rc == 0;
        }
        finally
        {
            if (added) file.SafeFileHandle.DangerousRelease();
        }
    }

    [LibraryImport("libc.so.6", EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(int fd, int command, ref Flock request);
}
