// The host's page-sharing scanner, as Linux's KSM does it: walks the guest pages of the VMs that opted
// in to sharing at a set rate (pages per period), hashes each page's content (XxHash3), and on a hash
// match asks the engine to merge, which compares the bytes under the page's lock before it shares.
// Uniform pages (one 64-bit word repeated: zero pages, a balloon's agreed value) collapse onto one
// shared frame per value without a hash.
using System.Diagnostics;
using System.IO.Hashing;
using System.Runtime.InteropServices;
using PageLab.Core.Guest;
using PageLab.Core.Host;

namespace PageLab.Core.Sharing;

/// <summary>How fast the scanner walks guest pages. KSM's default is 100 pages every 20 ms (5,000 pages/s).</summary>
/// <param name="PagesPerPeriod">Pages looked at per period (KSM's pages_to_scan).</param>
/// <param name="Period">Sleep between batches (KSM's sleep_millisecs).</param>
public sealed record ScannerOptions(int PagesPerPeriod = 100, TimeSpan Period = default)
{
    public TimeSpan Period { get; init; } = Period == default ? TimeSpan.FromMilliseconds(20) : Period;

    /// <summary>KSM's defaults: 100 pages per 20 ms.</summary>
    public static ScannerOptions KsmDefault => new(100, TimeSpan.FromMilliseconds(20));
}

/// <summary>What the scanner has done and what sharing saves now.</summary>
/// <param name="PagesScanned">Pages looked at.</param>
/// <param name="PagesMerged">Pages the scanner merged onto a shared frame (the first page of a new shared frame included).</param>
/// <param name="UniformPagesMerged">Of those, pages holding one 64-bit word repeated (zero pages, balloon values).</param>
/// <param name="HashMatchesThatDiffered">Hash matches whose bytes differed when compared (changed since hashed, or a collision).</param>
/// <param name="SharedFrames">Frames in state Shared now.</param>
/// <param name="SharingPages">Guest pages mapping them now.</param>
/// <param name="CowBreaks">Copy-on-write breaks in the scanned VMs (writes to shared pages).</param>
/// <param name="ScanTime">Time spent scanning (sleep left out).</param>
/// <param name="Elapsed">Time since the scanner started (sleep included).</param>
/// <param name="MapLimitHits">Merges refused because the mapping budget (vm.max_map_count) was full: a
/// shared page maps a frame that does not follow its neighbours' frames, so it is a mapping of its own.</param>
public readonly record struct SharingMetrics(long PagesScanned, long PagesMerged, long UniformPagesMerged, long HashMatchesThatDiffered,
    long SharedFrames, long SharingPages, ulong CowBreaks, TimeSpan ScanTime, TimeSpan Elapsed, long MapLimitHits = 0)
{
    /// <summary>Frames sharing saves now.</summary>
    public long FramesSaved => SharingPages - SharedFrames;

    /// <summary>Pages scanned per second of wall time (the configured rate, if the scanner keeps up).</summary>
    public double ScanRatePagesPerSecond => Elapsed > TimeSpan.Zero ? PagesScanned / Elapsed.TotalSeconds : 0;

    /// <summary>Pages the scanner could look at per second of its own CPU time (its throughput).</summary>
    public double ThroughputPagesPerSecond => ScanTime > TimeSpan.Zero ? PagesScanned / ScanTime.TotalSeconds : 0;
}

public sealed class PageScanner
{
    private readonly HostArena _arena;
    private readonly List<GuestVm> _vms;
    private readonly Dictionary<ulong, HostFrame> _stable = new();            // content hash -> shared frame
    private readonly Dictionary<ulong, HostFrame> _uniform = new();           // repeated word -> shared frame
    private readonly Dictionary<ulong, (GuestVm Vm, GuestPage Page)> _unstable = new(); // hash -> a page seen this pass
    private readonly Stopwatch _elapsed = new();
    private int _vm;
    private ulong _page;
    private long _scanned, _merged, _uniformMerged, _differed, _mapLimitHits;
    private long _scanTicks;

    /// <param name="vms">VMs to scan; those that did not opt in (<see cref="GuestVm.EnableSharing"/>) are skipped.</param>
    public PageScanner(HostArena arena, IEnumerable<GuestVm> vms, ScannerOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(arena);
        _arena = arena;
        _vms = vms.ToList();
        foreach (GuestVm vm in _vms)
            if (vm.Arena != arena) throw new ArgumentException($"VM {vm.Name} lives in another arena", nameof(vms));
        Options = options ?? ScannerOptions.KsmDefault;
        ArgumentOutOfRangeException.ThrowIfLessThan(Options.PagesPerPeriod, 1, nameof(options));
    }

    public ScannerOptions Options { get; }

    public SharingMetrics Metrics
    {
        get
        {
            SharingCounts c = _arena.Sharing;
            ulong cow = 0;
            foreach (GuestVm vm in _vms)
                if (!vm.IsDisposed) cow += vm.Counters.CowBreaks;
            return new SharingMetrics(_scanned, _merged, _uniformMerged, _differed, c.SharedFrames, c.SharingPages, cow,
                TimeSpan.FromTicks(_scanTicks), _elapsed.Elapsed, _mapLimitHits);
        }
    }

    /// <summary>Scans batches of <see cref="ScannerOptions.PagesPerPeriod"/> pages, sleeping a period
    /// between them, until cancelled.</summary>
    public void Run(CancellationToken cancel)
    {
        while (!cancel.IsCancellationRequested)
        {
            ScanBatch(Options.PagesPerPeriod);
            cancel.WaitHandle.WaitOne(Options.Period);
        }
    }

    /// <summary>Looks at the next <paramref name="pages"/> guest pages (round robin over the VMs that
    /// opted in) and merges those whose content matches. Returns how many pages it merged.</summary>
    public int ScanBatch(int pages)
    {
        if (!_elapsed.IsRunning) _elapsed.Start();
        long start = Stopwatch.GetTimestamp();
        int merged = 0;
        for (int i = 0; i < pages && NextPage() is (GuestVm vm, GuestPage page); i++)
        {
            _scanned++;
            try { merged += ScanPage(vm, page) ? 1 : 0; }
            catch (ObjectDisposedException) { } // the VM went away while it was being scanned
            catch (MapLimitException) { _mapLimitHits++; } // a shared page is a mapping of its own: the budget is full
        }
        _merged += merged;
        _scanTicks += Stopwatch.GetElapsedTime(start).Ticks;
        return merged;
    }

    /// <summary>Scans every page of every VM once (a full pass). Returns how many it merged.</summary>
    public int ScanPass()
    {
        long total = _vms.Where(v => !v.IsDisposed && v.SharingEnabled).Sum(v => (long)v.PageCount);
        int merged = 0;
        for (long done = 0; done < total; done += 4096) merged += ScanBatch((int)Math.Min(4096, total - done));
        return merged;
    }

    // The next page to look at, walking each VM's pages in order; a pass over all VMs ends the unstable set.
    private (GuestVm, GuestPage)? NextPage()
    {
        for (int tries = 0; tries <= _vms.Count; tries++)
        {
            if (_vm >= _vms.Count) { _vm = 0; _page = 0; _unstable.Clear(); }
            GuestVm vm = _vms[_vm];
            if (vm.IsDisposed || !vm.SharingEnabled || _page >= vm.PageCount)
            {
                _vm++;
                _page = 0;
                continue;
            }
            return (vm, new GuestPage(_page++));
        }
        return null;
    }

    private bool ScanPage(GuestVm vm, GuestPage page)
    {
        if (vm.StateOf(page) != GuestPageState.Backed || vm.Translate(page) is not HostFrame own) return false;
        // A racy read through the host view (no fault, the guest may be writing): only a hint. The engine
        // compares the bytes with the page read-only before it shares anything.
        ReadOnlySpan<byte> bytes = _arena.FrameBytes(own);
        ReadOnlySpan<ulong> words = MemoryMarshal.Cast<byte, ulong>(bytes);
        if (words.IndexOfAnyExcept(words[0]) < 0) return MergeUniform(vm, page, words[0]);
        ulong hash = XxHash3.HashToUInt64(bytes);
        if (_stable.TryGetValue(hash, out HostFrame shared))
        {
            switch (_arena.StateOf(shared) == FrameState.Shared ? vm.TryShare(page, shared) : ShareResult.NotEligible)
            {
                case ShareResult.Merged: return true;
                case ShareResult.Differs: _differed++; return false;
                default: _stable.Remove(hash); break; // the frame died (its last sharer left): start again
            }
        }
        if (!_unstable.TryGetValue(hash, out var seen) || seen.Vm.IsDisposed || (seen.Vm == vm && seen.Page == page))
        {
            _unstable[hash] = (vm, page);
            return false;
        }
        _unstable.Remove(hash);
        // Two pages of the same hash: the one seen first becomes the shared frame, then this one merges.
        if (seen.Vm.ShareCreate(seen.Page) is not HostFrame made) return false;
        _merged++; // the first sharer
        // Read-only now, so its content is final: register it only under the hash it really has.
        if (XxHash3.HashToUInt64(_arena.FrameBytes(made)) != hash) return false;
        _stable[hash] = made;
        if (vm.TryShare(page, made) == ShareResult.Merged) return true;
        _differed++;
        return false;
    }

    private bool MergeUniform(GuestVm vm, GuestPage page, ulong word)
    {
        if (_uniform.TryGetValue(word, out HostFrame shared) && _arena.StateOf(shared) == FrameState.Shared)
        {
            ShareResult r = vm.TryShare(page, shared);
            if (r == ShareResult.Merged) { _uniformMerged++; return true; }
            if (r == ShareResult.Differs) { _differed++; return false; }
        }
        // No live frame for this value yet: this page's frame becomes it.
        if (vm.ShareCreate(page) is not HostFrame made) return false;
        _uniformMerged++;
        ReadOnlySpan<ulong> now = MemoryMarshal.Cast<byte, ulong>(_arena.FrameBytes(made)); // read-only now: final
        if (now.IndexOfAnyExcept(word) < 0) _uniform[word] = made;
        return true;
    }
}
