// Streams Valgrind lackey text (`valgrind --tool=lackey --trace-mem=yes`) into windows of page sets, a buffer
// at a time (a 1 GB trace is never held whole); a line it cannot read stops it naming the file, line and text.
using System.Text;

namespace PageLab.Lab.Workloads.Traces;

/// <summary>Reads lackey's lines: <c>I  addr,size</c> (an instruction fetch), <c> L addr,size</c> (load),
/// <c> S addr,size</c> (store), <c> M addr,size</c> (modify: load and store); addresses in hex, sizes in decimal.
/// Lines starting <c>==</c> (Valgrind's own, <c>==pid== ...</c>) and blank lines are skipped. An access that
/// spans pages touches each of them; it counts as one reference.</summary>
public sealed class LackeyReader : IDisposable
{
    /// <summary>Lackey reports addresses of the machine it ran on; PageLab's guests use 4 KiB pages.</summary>
    public const int PageShift = 12;
    private const int MaxSize = 1 << 20;

    private readonly Stream _input;
    private readonly string _name;
    private readonly PageNumbering _numbering;
    private readonly bool _instructions;
    private readonly int _pageLimit;
    private readonly bool _wrap;
    private readonly byte[] _buffer = new byte[1 << 16];
    private int _start, _end;
    private bool _eof;

    /// <param name="name">What errors call the input (its path).</param>
    /// <param name="numbering">Page numbers: shared between readers of one trace, so a replay that starts the
    /// file again keeps its pages.</param>
    /// <param name="instructions">Count instruction fetches (<c>I</c>) as references reading their page.</param>
    /// <param name="pageLimit">Distinct pages the reader may number before it refuses the next new one (naming
    /// its line), unless <paramref name="wrap"/>.</param>
    public LackeyReader(Stream input, string name, PageNumbering numbering, bool instructions = true, int pageLimit = int.MaxValue, bool wrap = false)
    {
        _input = input;
        _name = name;
        _numbering = numbering;
        _instructions = instructions;
        _pageLimit = pageLimit;
        _wrap = wrap;
    }

    public static LackeyReader Open(string path, PageNumbering numbering, bool instructions = true, int pageLimit = int.MaxValue, bool wrap = false) =>
        new(TraceFiles.OpenRead(path), path, numbering, instructions, pageLimit, wrap);

    /// <summary>Lines read so far (the last one read is this number, counted from 1).</summary>
    public long Line { get; private set; }
    /// <summary>References counted so far.</summary>
    public long References { get; private set; }

    /// <summary>Reads up to <paramref name="references"/> references into <paramref name="set"/> (which it does
    /// not clear). Returns how many it read: fewer only at the end of the input, 0 once there.</summary>
    public long ReadWindow(PageSet set, long references)
    {
        long n = 0;
        while (n < references && NextLine(out int at, out int length))
        {
            ReadOnlySpan<byte> s = _buffer.AsSpan(at, length);
            Line++;
            if (s.Length > 0 && s[^1] == (byte)'\r') s = s[..^1];
            int i = 0;
            while (i < s.Length && s[i] == (byte)' ') i++;
            if (i == s.Length) continue;                                    // blank
            byte type = s[i];
            if (type == (byte)'=' && i + 1 < s.Length && s[i + 1] == (byte)'=') continue;   // ==pid== Valgrind's own
            bool write;
            switch (type)
            {
                case (byte)'I': write = false; break;
                case (byte)'L': write = false; break;
                case (byte)'S': case (byte)'M': write = true; break;
                default: throw Bad(s, "is not a lackey line (\"I  addr,size\", \" L|S|M addr,size\" or a \"==pid==\" line)");
            }
            i++;
            if (i == s.Length || s[i] != (byte)' ') throw Bad(s, "has no space after its type");
            while (i < s.Length && s[i] == (byte)' ') i++;
            ulong address = 0;
            int digits = 0;
            for (; i < s.Length; i++, digits++)
            {
                int v = Hex(s[i]);
                if (v < 0) break;
                if (digits == 16) throw Bad(s, "has an address of more than 64 bits");
                address = address << 4 | (uint)v;
            }
            if (digits == 0 || i == s.Length || s[i] != (byte)',') throw Bad(s, "has no hex address followed by ','");
            i++;
            int size = 0, sizeDigits = 0;
            for (; i < s.Length && (uint)(s[i] - '0') <= 9; i++, sizeDigits++)
            {
                size = size * 10 + (s[i] - '0');
                if (size > MaxSize) throw Bad(s, $"has a size over {MaxSize} bytes");
            }
            while (i < s.Length && s[i] == (byte)' ') i++;
            if (sizeDigits == 0 || i != s.Length) throw Bad(s, "has no decimal size after the address (or text after it)");
            if (size == 0) throw Bad(s, "has size 0");
            if (type == (byte)'I' && !_instructions) continue;
            if (address > ulong.MaxValue - (ulong)size + 1) throw Bad(s, "runs past the end of the address space");
            n++;
            References++;
            ulong last = (address + (ulong)size - 1) >> PageShift;
            for (ulong page = address >> PageShift; ; page++)
            {
                int id = _numbering.IdOf(page, out bool isNew);
                if (isNew && id >= _pageLimit && !_wrap)
                    throw new TraceFormatException($"{_name}: line {Line}: page 0x{page:x} is the trace's distinct page number {(long)id + 1}, " +
                                                   $"more than the process's {_pageLimit} virtual pages; give the VM more pages or \"wrap\": true");
                set.Add(id, write);
                if (page == last) break;
            }
        }
        return n;
    }

    // The next line of the input as a range of the buffer (valid until the next call); false at the end.
    private bool NextLine(out int at, out int length)
    {
        while (true)
        {
            int nl = _buffer.AsSpan(_start, _end - _start).IndexOf((byte)'\n');
            if (nl >= 0)
            {
                (at, length) = (_start, nl);
                _start += nl + 1;
                return true;
            }
            if (_eof)
            {
                (at, length) = (_start, _end - _start);
                _start = _end;
                return length > 0;
            }
            if (_start == 0 && _end == _buffer.Length)
                throw new TraceFormatException($"{_name}: line {Line + 1}: longer than {_buffer.Length} bytes; not lackey output");
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
            _end -= _start;
            _start = 0;
            int got = _input.Read(_buffer, _end, _buffer.Length - _end);
            if (got == 0) _eof = true;
            _end += got;
        }
    }

    private static int Hex(byte c) => c switch
    {
        >= (byte)'0' and <= (byte)'9' => c - '0',
        >= (byte)'a' and <= (byte)'f' => c - 'a' + 10,
        >= (byte)'A' and <= (byte)'F' => c - 'A' + 10,
        _ => -1,
    };

    private TraceFormatException Bad(ReadOnlySpan<byte> line, string why)
    {
        string text = Encoding.UTF8.GetString(line.Length > 60 ? line[..60] : line) + (line.Length > 60 ? "..." : "");
        return new TraceFormatException($"{_name}: line {Line}: '{text}' {why}");
    }

    public void Dispose() => _input.Dispose();
}

/// <summary>Opening trace files with errors that name them.</summary>
public static class TraceFiles
{
    /// <summary>The file for sequential reading ("-": standard input), or a <see cref="TraceFormatException"/>
    /// naming it and why it cannot be opened.</summary>
    public static Stream OpenRead(string path)
    {
        if (path == "-") return Console.OpenStandardInput();
        try
        {
            return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            string why = e switch
            {
                FileNotFoundException or DirectoryNotFoundException => "no such file",
                UnauthorizedAccessException => "not readable (permission denied)",
                _ => e.Message,
            };
            throw new TraceFormatException($"{path}: {why}");
        }
    }
}
