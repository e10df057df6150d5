// What every trace format comes down to: a trace's pages renumbered densely in first-seen order, and the set
// of pages one window (or tick) touched, each once, with whether it was written.
namespace PageLab.Lab.Workloads.Traces;

/// <summary>A trace file that cannot be read as its format says: the message names the file, the line (text) or
/// window (binary) and the value.</summary>
public sealed class TraceFormatException(string message) : Exception(message);

/// <summary>Renumbers a trace's pages densely, in the order they are first seen (the first page 0, the next new
/// page 1, ...): a process's scattered address space (text, heap, mmaps, stack) becomes pages 0..n-1.</summary>
public sealed class PageNumbering
{
    private readonly Dictionary<ulong, int> _ids = new();
    private ulong _lastPage = ulong.MaxValue;
    private int _lastId = -1;

    /// <summary>Distinct pages seen so far.</summary>
    public int Count => _ids.Count;

    /// <summary>The page's number, and whether it was first seen now.</summary>
    public int IdOf(ulong page, out bool isNew)
    {
        isNew = false;
        // Successive references mostly hit the page before (code, a loop over an array): skip the hash.
        if (page == _lastPage) return _lastId;
        if (!_ids.TryGetValue(page, out int id))
        {
            if (_ids.Count == int.MaxValue) throw new TraceFormatException($"more than {int.MaxValue} distinct pages");
            id = _ids.Count;
            _ids.Add(page, id);
            isNew = true;
        }
        _lastPage = page;
        _lastId = id;
        return id;
    }
}

/// <summary>The distinct pages a window touched, each with whether any reference wrote it (a set, not a
/// sequence: a page touched a thousand times in the window is in it once).</summary>
public sealed class PageSet
{
    private int[] _stamp = new int[1024];       // per page id: the epoch it was last added in
    private bool[] _written = new bool[1024];
    private int[] _pages = new int[256];
    private int _count;
    private int _epoch = 1;

    public int Count => _count;
    /// <summary>The pages, in the order first added (<see cref="Sort"/> orders them by id).</summary>
    public ReadOnlySpan<int> Pages => _pages.AsSpan(0, _count);
    public bool Written(int id) => _written[id];

    public void Add(int id, bool write)
    {
        if ((uint)id >= (uint)_stamp.Length) Grow(id);
        if (_stamp[id] != _epoch)
        {
            _stamp[id] = _epoch;
            _written[id] = write;
            if (_count == _pages.Length) Array.Resize(ref _pages, _pages.Length * 2);
            _pages[_count++] = id;
        }
        else if (write) _written[id] = true;
    }

    public void Clear()
    {
        _count = 0;
        if (++_epoch == int.MaxValue)
        {
            Array.Clear(_stamp);
            _epoch = 1;
        }
    }

    public void Sort() => _pages.AsSpan(0, _count).Sort();

    private void Grow(int id)
    {
        int size = _stamp.Length;
        while (size <= id) size = size > int.MaxValue / 2 ? int.MaxValue : size * 2;
        Array.Resize(ref _stamp, size);
        Array.Resize(ref _written, size);
    }
}
