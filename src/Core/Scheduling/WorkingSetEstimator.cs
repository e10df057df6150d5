// Statistical working-set sampling through the fault engine (ESX style): each period a random sample
// of backed pages is made inaccessible; the share touched by the next period is the active fraction.
using PageLab.Core.Guest;

namespace PageLab.Core.Scheduling;

public sealed class WorkingSetEstimator
{
    private readonly GuestVm _vm;
    private readonly Random _rng;
    private GuestPage[] _sample = [];
    private double _slow, _fast;

    public WorkingSetEstimator(GuestVm vm, Random rng, int samplePages = 100)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(samplePages, 1);
        _vm = vm;
        _rng = rng;
        SamplePages = samplePages;
    }

    public int SamplePages { get; }
    /// <summary>Touched / sampled in the last finished period, or null before one finished.</summary>
    public double? LastFraction { get; private set; }
    /// <summary>The smoothed active fraction: the larger of a slow and a fast moving average, so the
    /// estimate rises quickly when a VM becomes busy and falls slowly when it idles.</summary>
    public double ActiveFraction => Math.Max(_slow, _fast);
    public int Periods { get; private set; }

    /// <summary>Ends the running period (if any) and starts the next with a fresh sample.</summary>
    public void NextPeriod()
    {
        if (_sample.Length > 0)
        {
            var results = new SampleResult[_sample.Length];
            int n = _vm.CollectSample(_sample, results);
            // Pages the host unbacked, remapped or swapped before the guest touched them are not activity,
            // and not evidence of idleness either: they leave the fraction's base.
            int kept = results.Count(r => r != SampleResult.Gone);
            if (kept > 0)
            {
                double f = (double)n / kept;
                LastFraction = f;
                if (Periods++ == 0) _slow = _fast = f;
                else
                {
                    _slow += 0.25 * (f - _slow);
                    _fast += 0.75 * (f - _fast);
                }
            }
        }
        var pick = new HashSet<ulong>();
        for (int tries = 0; pick.Count < SamplePages && tries < SamplePages * 20; tries++)
        {
            ulong g = (ulong)_rng.NextInt64((long)_vm.PageCount);
            if (_vm.StateOf(new GuestPage(g)) == GuestPageState.Backed) pick.Add(g);
        }
        GuestPage[] sample = pick.Select(g => new GuestPage(g)).ToArray();
        _vm.Sample(sample);
        _sample = sample;
    }
}
