// The page-epoch trace format (.pet, docs/traces.md): per window of N references, the distinct pages touched
// (densely numbered) and whether each was written; varint deltas, a versioned header the writer completes last.
using System.Buffers.Binary;

namespace PageLab.Lab.Workloads.Traces;

/// <summary>What a .pet file's header says.</summary>
/// <param name="PageShift">log2 of the trace's page size (12: 4 KiB).</param>
/// <param name="Instructions">Instruction fetches were counted as references (and their pages as read).</param>
/// <param name="ReferencesPerWindow">References one window holds (the last may hold fewer).</param>
/// <param name="Windows">Windows in the file.</param>
/// <param name="DistinctPages">Pages numbered 0..DistinctPages-1.</param>
/// <param name="References">References of the source trace the windows hold.</param>
/// <param name="PageTouches">Entries of all windows together (the sum of their page counts).</param>
public sealed record PageEpochHeader(int PageShift, bool Instructions, ulong ReferencesPerWindow, ulong Windows,
                                     ulong DistinctPages, ulong References, ulong PageTouches)
{
    /// <summary>The first line of every file: the format's name and version, readable with `head -1`.</summary>
    public static ReadOnlySpan<byte> Magic => "PLPET 1\n"u8;
    /// <summary>The magic line and the fixed fields after it.</summary>
    public const int Size = 64;
    private const uint InstructionsFlag = 1;
    // Written while the conversion runs, replaced by the count at its end: a file a conversion left half done is refused.
    private const ulong Incomplete = ulong.MaxValue;

    internal void WriteTo(Span<byte> b, bool complete)
    {
        Magic.CopyTo(b);
        BinaryPrimitives.WriteUInt32LittleEndian(b[8..], Size);
        BinaryPrimitives.WriteUInt32LittleEndian(b[12..], (uint)PageShift);
        BinaryPrimitives.WriteUInt32LittleEndian(b[16..], Instructions ? InstructionsFlag : 0);
        BinaryPrimitives.WriteUInt32LittleEndian(b[20..], 0);
        BinaryPrimitives.WriteUInt64LittleEndian(b[24..], ReferencesPerWindow);
        BinaryPrimitives.WriteUInt64LittleEndian(b[32..], complete ? Windows : Incomplete);
        BinaryPrimitives.WriteUInt64LittleEndian(b[40..], DistinctPages);
        BinaryPrimitives.WriteUInt64LittleEndian(b[48..], References);
        BinaryPrimitives.WriteUInt64LittleEndian(b[56..], PageTouches);
    }

    internal static PageEpochHeader Parse(ReadOnlySpan<byte> b, int got, string name)
    {
        if (got < Magic.Length || !b[..Magic.Length].SequenceEqual(Magic))
        {
            if (got >= 6 && b[..6].SequenceEqual("PLPET "u8))
                throw new TraceFormatException($"{name}: page-epoch version '{System.Text.Encoding.ASCII.GetString(b[6..Math.Min(got, 8)]).TrimEnd('\n')}' is not one this PageLab reads (1)");
            throw new TraceFormatException($"{name}: not a page-epoch trace (it does not start with \"PLPET 1\"; a lackey text trace needs \"format\": \"lackey\")");
        }
        if (got < Size) throw new TraceFormatException($"{name}: the header ends after {got} of its {Size} bytes");
        uint size = BinaryPrimitives.ReadUInt32LittleEndian(b[8..]);
        if (size != Size) throw new TraceFormatException($"{name}: header size {size}, expected {Size}");
        var h = new PageEpochHeader(
            (int)BinaryPrimitives.ReadUInt32LittleEndian(b[12..]),
            (BinaryPrimitives.ReadUInt32LittleEndian(b[16..]) & InstructionsFlag) != 0,
            BinaryPrimitives.ReadUInt64LittleEndian(b[24..]),
            BinaryPrimitives.ReadUInt64LittleEndian(b[32..]),
            BinaryPrimitives.ReadUInt64LittleEndian(b[40..]),
            BinaryPrimitives.ReadUInt64LittleEndian(b[48..]),
            BinaryPrimitives.ReadUInt64LittleEndian(b[56..]));
        if (h.Windows == Incomplete) throw new TraceFormatException($"{name}: the conversion that wrote it did not finish (no window count in the header)");
        if (h.PageShift is < 9 or > 30) throw new TraceFormatException($"{name}: page shift {h.PageShift} is not 9 .. 30");
        if (h.ReferencesPerWindow == 0) throw new TraceFormatException($"{name}: 0 references per window");
        if (h.DistinctPages > int.MaxValue) throw new TraceFormatException($"{name}: {h.DistinctPages} distinct pages, more than {int.MaxValue}");
        return h;
    }

    /// <summary>Reads just the header of <paramref name="path"/>.</summary>
    public static PageEpochHeader Read(string path)
    {
        using Stream s = TraceFiles.OpenRead(path);
        Span<byte> b = stackalloc byte[Size];
        int got = s.ReadAtLeast(b, Size, throwOnEndOfStream: false);
        return Parse(b, got, path);
    }
}

/// <summary>Writes a .pet file window by window; <see cref="Complete"/> writes the header's counts (the output
/// must be seekable).</summary>
public sealed class PageEpochWriter : IDisposable
{
    private readonly Stream _out;
    private readonly BufferedStream _body;
    private readonly byte[] _varint = new byte[10];
    private PageEpochHeader _header;

    public PageEpochWriter(Stream output, int pageShift, bool instructions, ulong referencesPerWindow)
    {
        if (!output.CanSeek) throw new ArgumentException("a page-epoch trace is written to a file (its header is completed at the end)", nameof(output));
        _out = output;
        _header = new PageEpochHeader(pageShift, instructions, referencesPerWindow, 0, 0, 0, 0);
        Span<byte> h = stackalloc byte[PageEpochHeader.Size];
        _header.WriteTo(h, complete: false);
        _out.Write(h);
        _body = new BufferedStream(_out, 1 << 16);
    }

    public PageEpochHeader Header => _header;

    /// <summary>One window: its pages (sorted here) and the references it held.</summary>
    public void Write(PageSet set, long references, int distinctPages)
    {
        set.Sort();
        PutVarint((ulong)set.Count);
        long previous = -1;
        foreach (int id in set.Pages)
        {
            PutVarint((ulong)(id - previous) << 1 | (set.Written(id) ? 1UL : 0));
            previous = id;
        }
        _header = _header with
        {
            Windows = _header.Windows + 1, References = _header.References + (ulong)references,
            PageTouches = _header.PageTouches + (ulong)set.Count, DistinctPages = (ulong)distinctPages,
        };
    }

    /// <summary>Flushes the windows and writes the header's counts.</summary>
    public void Complete()
    {
        _body.Flush();
        _out.Position = 0;
        Span<byte> h = stackalloc byte[PageEpochHeader.Size];
        _header.WriteTo(h, complete: true);
        _out.Write(h);
        _out.Flush();
    }

    private void PutVarint(ulong v)
    {
        int n = 0;
        while (v >= 0x80)
        {
            _varint[n++] = (byte)(v | 0x80);
            v >>= 7;
        }
        _varint[n++] = (byte)v;
        _body.Write(_varint, 0, n);
    }

    public void Dispose() => _body.Dispose();
}

/// <summary>Streams a .pet file's windows (a buffer at a time).</summary>
public sealed class PageEpochReader : IDisposable
{
    private readonly Stream _input;
    private readonly string _name;
    private readonly byte[] _buffer = new byte[1 << 16];
    private int _at, _end;
    private ulong _window;

    public PageEpochReader(Stream input, string name)
    {
        _input = input;
        _name = name;
        Span<byte> h = stackalloc byte[PageEpochHeader.Size];
        Header = PageEpochHeader.Parse(h, input.ReadAtLeast(h, PageEpochHeader.Size, throwOnEndOfStream: false), name);
    }

    public static PageEpochReader Open(string path) => new(TraceFiles.OpenRead(path), path);

    public PageEpochHeader Header { get; }
    /// <summary>Windows read so far.</summary>
    public ulong Window => _window;

    /// <summary>Adds the next window's pages to <paramref name="set"/> (which it does not clear); false after the last.</summary>
    public bool ReadWindow(PageSet set)
    {
        if (_window == Header.Windows)
        {
            if (_at < _end || _input.Read(_buffer, 0, 1) > 0)
                throw new TraceFormatException($"{_name}: bytes after its last window ({Header.Windows}, as the header says)");
            return false;
        }
        _window++;
        ulong count = Varint();
        if (count > Header.DistinctPages) throw Bad($"holds {count} pages, more than the trace's {Header.DistinctPages} distinct pages");
        long id = -1;
        for (ulong i = 0; i < count; i++)
        {
            ulong v = Varint();
            ulong delta = v >> 1;
            if (delta == 0 || (ulong)(id + 1) + delta - 1 >= Header.DistinctPages)
                throw Bad($"entry {i}: page step {delta} after page {id} is not within the trace's {Header.DistinctPages} pages in ascending order");
            id += (long)delta;
            set.Add((int)id, (v & 1) != 0);
        }
        return true;
    }

    private ulong Varint()
    {
        ulong v = 0;
        for (int shift = 0; ; shift += 7)
        {
            if (_at == _end)
            {
                _end = _input.Read(_buffer, 0, _buffer.Length);
                _at = 0;
                if (_end == 0) throw Bad($"ends inside the window (the header promises {Header.Windows} windows)");
            }
            byte b = _buffer[_at++];
            if (shift == 63 && b > 1) throw Bad("holds a number of more than 64 bits");
            v |= (ulong)(b & 0x7F) << shift;
            if (b < 0x80) return v;
        }
    }

    private TraceFormatException Bad(string why) => new($"{_name}: window {_window}: {why}");

    public void Dispose() => _input.Dispose();
}
