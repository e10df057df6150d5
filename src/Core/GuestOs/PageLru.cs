// The page cache's two LRU lists (inactive and active file pages) over guest physical pages: intrusive,
// so adding, removing and rotating a page is O(1) and costs no allocation. Head: newest; tail: oldest.
namespace PageLab.Core.GuestOs;

internal sealed class PageLru
{
    public const byte None = 0, Inactive = 1, Active = 2;
    private const ulong Nil = ulong.MaxValue;

    private readonly ulong[] _prev, _next;
    private readonly byte[] _list;                  // per guest page: which list holds it
    private readonly ulong[] _head = [Nil, Nil, Nil], _tail = [Nil, Nil, Nil];
    private readonly ulong[] _count = new ulong[3];

    public PageLru(ulong pages)
    {
        _prev = new ulong[pages];
        _next = new ulong[pages];
        _list = new byte[pages];
    }

    public ulong Count(byte list) => _count[list];
    public byte ListOf(ulong g) => _list[g];
    /// <summary>The oldest page of <paramref name="list"/>, or null when it is empty.</summary>
    public ulong? Tail(byte list) => _tail[list] == Nil ? null : _tail[list];

    /// <summary>Puts <paramref name="g"/> at the head of <paramref name="list"/> (taking it off the list it is on).</summary>
    public void PushHead(ulong g, byte list)
    {
        Remove(g);
        _list[g] = list;
        _prev[g] = Nil;
        _next[g] = _head[list];
        if (_head[list] != Nil) _prev[_head[list]] = g;
        else _tail[list] = g;
        _head[list] = g;
        _count[list]++;
    }

    public void Remove(ulong g)
    {
        byte list = _list[g];
        if (list == None) return;
        if (_prev[g] != Nil) _next[_prev[g]] = _next[g];
        else _head[list] = _next[g];
        if (_next[g] != Nil) _prev[_next[g]] = _prev[g];
        else _tail[list] = _prev[g];
        _list[g] = None;
        _count[list]--;
    }

    /// <summary>Every page of <paramref name="list"/>, newest first.</summary>
    public IEnumerable<ulong> Pages(byte list)
    {
        for (ulong g = _head[list]; g != Nil; g = _next[g]) yield return g;
    }
}
