// A thread that allocates and forces full collections until disposed: the GC stress every test of the
// fault path runs beside (a fault resolved by managed code would deadlock with it).
namespace PageLab.Tests;

internal sealed class GcStress : IDisposable
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _thread;
    private int _collections;

    public GcStress()
    {
        _thread = new Thread(() =>
        {
            var keep = new List<byte[]>();
            while (!_stop.IsCancellationRequested)
            {
                for (int i = 0; i < 100; i++) keep.Add(new byte[512]);
                if (keep.Count > 5000) keep.Clear();
                GC.Collect();
                Interlocked.Increment(ref _collections);
                // Back to back, collections starve the guest threads (each one stops them all) until a
                // 100k-fault test takes minutes; a millisecond between them still gives hundreds a second.
                Thread.Sleep(1);
            }
        }) { IsBackground = true };
        _thread.Start();
    }

    public int Collections => Volatile.Read(ref _collections);

    /// <summary>Fails the whole run (instead of hanging it) if <paramref name="what"/> is not done in time.</summary>
    public static Timer Watchdog(string what, int seconds = 300) =>
        new(_ => Environment.FailFast($"{what} did not finish in {seconds} s: the fault path deadlocked"), null,
            TimeSpan.FromSeconds(seconds), Timeout.InfiniteTimeSpan);

    /// <summary>Fails the whole run if <paramref name="progress"/> stops moving for
    /// <paramref name="stallSeconds"/>: a deadlocked fault path makes no progress at all, while a slow
    /// machine (Wine beside a heavy job) makes it slowly. So the bound is work done, not wall time.</summary>
    public static Timer StallWatchdog(string what, Func<long> progress, int stallSeconds = 60)
    {
        long last = progress();
        DateTime moved = DateTime.UtcNow;
        return new Timer(_ =>
        {
            long now;
            try { now = progress(); }
            catch (ObjectDisposedException) { return; } // the test finished while this tick ran
            if (now != last) { last = now; moved = DateTime.UtcNow; return; }
            if (DateTime.UtcNow - moved > TimeSpan.FromSeconds(stallSeconds))
                Environment.FailFast($"{what} made no progress for {stallSeconds} s (stuck at {now}): the fault path deadlocked");
        }, null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
    }

    public void Dispose()
    {
        _stop.Cancel();
        _thread.Join();
        _stop.Dispose();
    }
}
