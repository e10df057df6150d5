// Output files (--trace, --json, --csv, --plot) are written to a partial file beside them and renamed over
// them only when complete, so an existing file is replaced by a whole new one or not at all; the partial file
// is locked while written, so a second PageLab process given the same output is refused.
using System.Runtime.InteropServices;

namespace PageLab.Cli;

/// <summary>A command's output files, each written as a partial file in the same directory
/// (<see cref="Partial"/>, ".NAME.pagelab-partial.EXT") and renamed over the output by <see cref="Commit"/>
/// (a rename within one directory is atomic). Each partial file carries an advisory open-file-description
/// lock (fcntl F_OFD_SETLK, Linux) held until disposed: another process's lock on it makes <see cref="Take"/>
/// refuse the output; the kernel drops the locks when the process ends, however it ends. A partial file not
/// committed is removed on <see cref="Dispose"/> (and by <see cref="RemoveUnwritten"/> for a process exiting
/// at once); only one killed with SIGKILL leaves it behind, never a 0-byte or half-written output.</summary>
internal sealed partial class OutputLocks : IDisposable
{
    private readonly List<Held> _held = new();

    private sealed class Held(string output, string partial, FileStream? lockFile)
    {
        public string Output { get; } = output;
        public string Partial { get; } = partial;
        public FileStream? LockFile { get; } = lockFile;
        public bool Committed { get; set; }
    }

    private OutputLocks()
    {
    }

    /// <summary>The partial file that <paramref name="output"/> is written to before <see cref="Commit"/>.</summary>
    public static string PartialOf(string output)
    {
        string full = Resolve(output);
        return Path.Combine(Path.GetDirectoryName(full) ?? "/", $".{Path.GetFileNameWithoutExtension(full)}.pagelab-partial{Path.GetExtension(full)}");
    }

    /// <summary>Locks the partial file of every named output (null and "-" are skipped); <see cref="UsageException"/>
    /// naming the option and file when another process holds one. Nothing is created at the outputs themselves.</summary>
    public static OutputLocks Take(params (string Option, string? Path)[] outputs)
    {
        var locks = new OutputLocks();
        try
        {
            foreach ((string option, string? path) in outputs)
            {
                if (path is null or "-") continue;
                string full = Resolve(path), partial = PartialOf(full);
                if (locks._held.FirstOrDefault(h => h.Partial == partial) is Held twice)
                    throw new UsageException($"{option} {path}: is the same file as another output of this command ({twice.Output}); give each its own");
                if (!OperatingSystem.IsLinux())
                {
                    locks._held.Add(new Held(full, partial, null));
                    continue;
                }
                // Not truncated before the lock is ours: the partial file may be another process's, being written.
                FileStream file;
                try
                {
                    file = new FileStream(partial, FileMode.OpenOrCreate, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete, 1);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    throw new UsageException($"{option} {path}: cannot write {partial} beside it ({(e is IOException io ? OutputPaths.Reason(io, partial) : "permission denied")})");
                }
                if (!TryLock(file, out int errno))
                {
                    file.Dispose();
                    if (errno is Eagain or Eacces)
                        throw new UsageException($"{option} {path}: another PageLab process is writing this file; wait for it to end or give another file");
                    throw new UsageException($"{option} {path}: cannot be locked for writing ({Marshal.GetPInvokeErrorMessage(errno)})");
                }
                file.SetLength(0); // what a killed process left there
                locks._held.Add(new Held(full, partial, file));
            }
            return locks;
        }
        catch
        {
            locks.Dispose();
            throw;
        }
    }

    /// <summary>Where to write <paramref name="output"/> (one of the outputs given to <see cref="Take"/>).</summary>
    public string Partial(string output) => Find(output).Partial;

    /// <summary>Renames the complete partial file of <paramref name="output"/> over it.</summary>
    public void Commit(string output)
    {
        Held h = Find(output);
        File.Move(h.Partial, h.Output, overwrite: true);
        h.Committed = true;
    }

    // An output given as a symlink is written where the link leads: the rename replaces the file, not the link.
    private static string Resolve(string output)
    {
        string full = Path.GetFullPath(output);
        return File.Exists(full) && new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true) is FileSystemInfo target ? target.FullName : full;
    }

    private Held Find(string output)
    {
        string full = Resolve(output);
        return _held.First(h => h.Output == full);
    }

    /// <summary>Removes the partial files not committed (for a process exiting at once, e.g. on a second
    /// Ctrl-C, which does not get to <see cref="Dispose"/>); the outputs keep what they had.</summary>
    public void RemoveUnwritten()
    {
        foreach (Held h in _held.ToArray())
            if (!h.Committed) RemoveIfOurs(h);
    }

    public void Dispose()
    {
        foreach (Held h in _held)
        {
            if (!h.Committed) RemoveIfOurs(h);
            h.LockFile?.Dispose(); // closing the descriptor releases its lock
        }
        _held.Clear();
    }

    // Deletes a partial file while it is still the one this process locked (not one another process made
    // since, under the same name, after this one was renamed away).
    private static void RemoveIfOurs(Held h)
    {
        try
        {
            if (h.LockFile is FileStream f && OperatingSystem.IsLinux())
            {
                if (Mono.Unix.Native.Syscall.fstat((int)f.SafeFileHandle.DangerousGetHandle(), out Mono.Unix.Native.Stat mine) != 0 ||
                    Mono.Unix.Native.Syscall.stat(h.Partial, out Mono.Unix.Native.Stat named) != 0 ||
                    mine.st_dev != named.st_dev || mine.st_ino != named.st_ino) return;
            }
            File.Delete(h.Partial);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ObjectDisposedException)
        {
            // Gone already, or not ours to remove.
        }
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
