// Lackey text to the page-epoch format: windows of N references become sorted page sets, streamed from the
// input (a pipe from Valgrind works) to a file whose header the converter completes last.
namespace PageLab.Lab.Workloads.Traces;

public static class TraceConverter
{
    /// <summary>Converts lackey text from <paramref name="lackey"/> (named <paramref name="inputName"/> in errors)
    /// into a .pet on <paramref name="pet"/> (seekable), <paramref name="referencesPerWindow"/> references per
    /// window. Returns the header written.</summary>
    public static PageEpochHeader Convert(Stream lackey, string inputName, Stream pet, long referencesPerWindow, bool instructions = true)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(referencesPerWindow, 1);
        var numbering = new PageNumbering();
        var reader = new LackeyReader(lackey, inputName, numbering, instructions);
        using var writer = new PageEpochWriter(pet, LackeyReader.PageShift, instructions, (ulong)referencesPerWindow);
        var set = new PageSet();
        while (true)
        {
            set.Clear();
            long n = reader.ReadWindow(set, referencesPerWindow);
            if (n == 0) break;
            writer.Write(set, n, numbering.Count);
        }
        writer.Complete();
        return writer.Header;
    }

    /// <summary>Converts file to file: the output appears whole or not at all (written beside it, then renamed).</summary>
    public static PageEpochHeader ConvertFile(string lackeyPath, string petPath, long referencesPerWindow, bool instructions = true)
    {
        string full = Path.GetFullPath(petPath);
        string partial = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.partial");
        try
        {
            PageEpochHeader h;
            using (Stream input = TraceFiles.OpenRead(lackeyPath))
            using (var output = new FileStream(partial, FileMode.Create, FileAccess.ReadWrite, FileShare.None))
                h = Convert(input, lackeyPath, output, referencesPerWindow, instructions);
            File.Move(partial, full, overwrite: true);
            return h;
        }
        catch
        {
            File.Delete(partial);
            throw;
        }
    }
}
