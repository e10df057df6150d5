// Output files (--plot, --trace, --json) are checked before a run starts: the directory must exist and the
// file must be creatable or writable, so a typo costs nothing instead of the whole run.
namespace PageLab.Cli;

internal static class OutputPaths
{
    /// <summary>Throws <see cref="UsageException"/> naming <paramref name="option"/> and <paramref name="path"/>
    /// when the file cannot be written: a directory, a missing directory, no permission. Leaves no file
    /// behind (an existing file is opened for writing without being changed; a new one is created and removed).</summary>
    public static void CheckWritable(string option, string path)
    {
        if (path.Length == 0) throw new UsageException($"{option}: the file name is empty; give a file name");
        if (path == "-") throw new UsageException($"{option} -: only --json writes to stdout ('-'); give {option} a file name");
        string full = Path.GetFullPath(path);
        if (Directory.Exists(full)) throw new UsageException($"{option} {path}: is a directory; give a file name in it");
        string dir = Path.GetDirectoryName(full) ?? "/";
        if (File.Exists(dir)) throw new UsageException($"{option} {path}: {dir} is a file, not a directory");
        if (!Directory.Exists(dir)) throw new UsageException($"{option} {path}: the directory {dir} does not exist");
        if (DanglingLink(full) is string target)
            throw new UsageException($"{option} {path}: is a symlink to {target}, which does not exist; give the file itself");
        // Outputs are written beside the file and renamed over it (OutputLocks): that needs a regular file,
        // and a device or pipe would never see the bytes (or, for /dev/full, fail after the whole run).
        if (File.Exists(full) && !IsRegular(full))
            throw new UsageException($"{option} {path}: is not a regular file (a device, pipe or socket); give a file name" +
                                     (option == "--json" ? ", or '-' for stdout" : ""));
        try
        {
            if (File.Exists(full))
                using (new FileStream(full, FileMode.Open, FileAccess.Write, FileShare.ReadWrite, 1)) { }
            // The file is written beside itself first (OutputLocks.PartialOf), so the directory must take a new file.
            using (new FileStream(Path.Combine(dir, $".pagelab-check-{Environment.ProcessId}-{Guid.NewGuid():N}"), FileMode.CreateNew, FileAccess.Write,
                       FileShare.None, 1, FileOptions.DeleteOnClose)) { }
        }
        catch (UnauthorizedAccessException)
        {
            throw new UsageException($"{option} {path}: not writable (permission denied)");
        }
        catch (FileNotFoundException)
        {
            // A directory that takes no new files although it exists (/proc, /sys).
            throw new UsageException($"{option} {path}: not writable (no file can be created in {dir})");
        }
        catch (IOException e)
        {
            throw new UsageException($"{option} {path}: not writable ({Reason(e, full)})");
        }
    }

    /// <summary>Where <paramref name="path"/> leads when it is a symlink to nothing, else null.</summary>
    internal static string? DanglingLink(string path)
    {
        if (!OperatingSystem.IsLinux()) return null;
        if (Mono.Unix.Native.Syscall.lstat(path, out Mono.Unix.Native.Stat l) != 0) return null;
        if ((l.st_mode & Mono.Unix.Native.FilePermissions.S_IFMT) != Mono.Unix.Native.FilePermissions.S_IFLNK) return null;
        if (Mono.Unix.Native.Syscall.stat(path, out _) == 0) return null;
        return new FileInfo(path).LinkTarget ?? "a missing file";
    }

    /// <summary>True when <paramref name="path"/> (through links) is a regular file; true where that cannot be told.</summary>
    internal static bool IsRegular(string path)
    {
        if (!OperatingSystem.IsLinux()) return true;
        return Mono.Unix.Native.Syscall.stat(path, out Mono.Unix.Native.Stat st) != 0 ||
               (st.st_mode & Mono.Unix.Native.FilePermissions.S_IFMT) == Mono.Unix.Native.FilePermissions.S_IFREG;
    }

    /// <summary>Refuses two outputs that name one file (one would overwrite the other): the same full path, or
    /// (Linux) two names of one existing file, a hard link or a symlink to it.</summary>
    public static void CheckDistinct(params (string Option, string? Path)[] outputs)
    {
        var given = outputs.Where(o => o.Path is not null && o.Path != "-").ToList();
        for (int i = 0; i < given.Count; i++)
            for (int j = i + 1; j < given.Count; j++)
            {
                if (Path.GetFullPath(given[i].Path!) == Path.GetFullPath(given[j].Path!))
                    throw new UsageException($"{given[i].Option} and {given[j].Option} name the same file ({given[i].Path}); give each its own");
                if (SameFile(given[i].Path!, given[j].Path!))
                    throw new UsageException($"{given[i].Option} {given[i].Path} and {given[j].Option} {given[j].Path} name one file (a link to the other); give each its own");
            }
    }

    /// <summary>Refuses an output that is one of the command's input files: writing it would destroy the input
    /// the run was read from. <paramref name="inputs"/> name each input as people know it ("the scenario file").</summary>
    public static void CheckNotInput((string Option, string? Path)[] outputs, params (string What, string? Path)[] inputs)
    {
        foreach ((string option, string? output) in outputs)
        {
            if (output is null or "-") continue;
            foreach ((string what, string? input) in inputs)
                if (input is not null && SameFile(output, input))
                    throw new UsageException($"{option} {output}: is {what} ({input}); writing it would overwrite the input, give {option} another file");
        }
    }

    /// <summary>True when <paramref name="a"/> and <paramref name="b"/> name one file: the same full path, or
    /// (Linux) both exist and are one device and inode, whatever links lead to them.</summary>
    internal static bool SameFile(string a, string b)
    {
        if (Path.GetFullPath(a) == Path.GetFullPath(b)) return true;
        if (!OperatingSystem.IsLinux()) return false;
        return Mono.Unix.Native.Syscall.stat(a, out Mono.Unix.Native.Stat x) == 0 && Mono.Unix.Native.Syscall.stat(b, out Mono.Unix.Native.Stat y) == 0 &&
               x.st_dev == y.st_dev && x.st_ino == y.st_ino;
    }

    /// <summary>An IOException's text without the " : 'path'" .NET appends (the path is already named).</summary>
    internal static string Reason(IOException e, string path) =>
        e.Message.Replace($" : '{path}'", "").Replace($"'{path}'", "the file").Trim().TrimEnd('.');
}
