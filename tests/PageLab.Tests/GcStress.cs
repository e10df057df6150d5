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

    public void Dispose()
    {
        _stop.Cancel();
        _thread.Join();
        _stop.Dispose();
    }
}
