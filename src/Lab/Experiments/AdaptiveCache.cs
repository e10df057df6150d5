// A guest application that sizes itself by memory condition: a key/value cache, one page per entry,
// that grows when memory is plentiful and gives pages back when it is low. Which signal drives it
// (the hypervisor's condition or the guest OS's free memory) is the experiment.
using PageLab.Core.GuestOs;
using PageLab.Core.Condition;

namespace PageLab.Lab.Experiments;

public sealed class AdaptiveCache
{
    private readonly GuestProcess _process;
    private readonly Func<MemoryLevel> _signal;
    private readonly Dictionary<ulong, LinkedListNode<(ulong Key, ulong Vpn)>> _entries = new();
    private readonly LinkedList<(ulong Key, ulong Vpn)> _lru = new();   // most recent first
    private readonly Stack<ulong> _freeVpns = new();

    public AdaptiveCache(GuestProcess process, ulong maxEntries, ulong initialEntries, int stepEntries, Func<MemoryLevel> signal)
    {
        if (maxEntries == 0 || maxEntries > process.VirtualPages)
            throw new ArgumentOutOfRangeException(nameof(maxEntries), maxEntries, $"cache needs 1..{process.VirtualPages} entries");
        ArgumentOutOfRangeException.ThrowIfGreaterThan(initialEntries, maxEntries);
        ArgumentOutOfRangeException.ThrowIfLessThan(stepEntries, 1);
        _process = process;
        _signal = signal;
        MaxEntries = maxEntries;
        CapacityEntries = initialEntries;
        StepEntries = stepEntries;
        for (ulong v = maxEntries; v-- > 0;) _freeVpns.Push(v);
    }

    public ulong MaxEntries { get; }
    public ulong CapacityEntries { get; private set; }
    public int StepEntries { get; }
    public long Hits { get; private set; }
    /// <summary>Lookups that found the entry but had to wait for the guest to page it back in.</summary>
    public long SlowHits { get; private set; }
    public long Misses { get; private set; }
    public ulong Entries => (ulong)_entries.Count;
    /// <summary>Pages of this cache the guest OS paged out.</summary>
    public ulong PageOuts => _process.SwappedOut;
    public double HitRate => Hits + SlowHits + Misses == 0 ? 0 : (double)Hits / (Hits + SlowHits + Misses);

    public void Get(ulong key)
    {
        if (_entries.TryGetValue(key, out var node))
        {
            if (_process.IsResident(node.Value.Vpn)) Hits++;
            else SlowHits++;                                          // a major fault brings it back
            Span<byte> page = _process.Page(node.Value.Vpn);
            if (page[0] != (byte)key) throw new InvalidOperationException($"cache entry {key} was corrupted");
            _lru.Remove(node);
            _lru.AddFirst(node);
            return;
        }
        Misses++;
        if (CapacityEntries == 0) return;
        while ((ulong)_entries.Count >= CapacityEntries) Evict();
        ulong vpn = _freeVpns.Pop();
        _process.Page(vpn).Fill((byte)key);                          // "fetch" the value into the page
        _entries[key] = _lru.AddFirst((key, vpn));
    }

    /// <summary>Grows or shrinks by the signal: plenty grows a step, low shrinks a step, critical four.</summary>
    public void Adapt()
    {
        switch (_signal())
        {
            case MemoryLevel.Plenty:
                CapacityEntries = Math.Min(MaxEntries, CapacityEntries + (ulong)StepEntries);
                break;
            case MemoryLevel.Low:
                Shrink((ulong)StepEntries);
                break;
            case MemoryLevel.Critical:
                Shrink(4 * (ulong)StepEntries);
                break;
        }
    }

    private void Shrink(ulong by)
    {
        CapacityEntries = CapacityEntries > by ? CapacityEntries - by : 0;
        while ((ulong)_entries.Count > CapacityEntries) Evict();
    }

    private void Evict()
    {
        (ulong key, ulong vpn) = _lru.Last!.Value;
        _lru.RemoveLast();
        _entries.Remove(key);
        _process.Release(vpn);                                         // the page goes back to the guest
        _freeVpns.Push(vpn);
    }
}
