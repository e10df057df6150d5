// Lifetimes of the arena and of a VM's guest memory: Dispose racing calls, Dispose twice, calls after
// Dispose, and spans used after their VM is gone. A case that crashed the engine runs in a child process
// (this test program started again on that one test), so a regression fails the test, not the whole run.
using System.Diagnostics;
using System.Runtime.CompilerServices;
using PageLab.Core;
using PageLab.Core.Guest;
using PageLab.Core.Host;

namespace PageLab.Tests;

public class EngineLifetimeTests
{
    private const string ChildVariable = "PAGELAB_LIFETIME_CHILD";

    // What the engine writes when a touch lands in a destroyed VM's quarantined guest memory.
    private const string StaleTouchMessage = "a touch of a destroyed VM's guest memory";

    /// <summary>True in the child process started for <paramref name="test"/> (run its body); in the parent,
    /// runs the child and returns false once <paramref name="check"/> accepted its exit code and output.</summary>
    private static bool InChild(string test, Action<int, string, string> check)
    {
        if (Environment.GetEnvironmentVariable(ChildVariable) == test) return true;
        if (!OperatingSystem.IsLinux()) Assert.Skip("runs the case in a child process with `dotnet exec` (Linux lane)");
        string dll = typeof(EngineLifetimeTests).Assembly.Location;
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (string a in new[] { "exec", dll, "-method", $"{typeof(EngineLifetimeTests).FullName}.{test}" }) info.ArgumentList.Add(a);
        info.Environment[ChildVariable] = test;
        using var child = new ChildCli(Process.Start(info)!);
        int exit = child.WaitForExit(TimeSpan.FromSeconds(240));
        check(exit, child.Out, child.Err);
        return false;
    }

    private static void PassedInChild(int exit, string stdout, string stderr)
    {
        Assert.True(exit == 0 && stdout.Contains("Total: 1, Errors: 0, Failed: 0"),
            $"child exit {exit}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    }

    // The child must die of the stale touch (a fault the runtime cannot handle), after saying where.
    private static void DiedOfTheStaleTouch(int exit, string stdout, string stderr)
    {
        Assert.True(stdout.Contains("touching the stale span") && stderr.Contains(StaleTouchMessage) && exit != 0,
            $"child exit {exit}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        Assert.DoesNotContain("stale span read", stdout);
    }

    [Fact]
    public void HostArena_Dispose_racing_calls_on_other_threads_never_frees_the_engine_tables_under_them()
    {
        if (!InChild(nameof(HostArena_Dispose_racing_calls_on_other_threads_never_frees_the_engine_tables_under_them), PassedInChild)) return;
        using var gc = new GcStress();
        using var watchdog = GcStress.Watchdog("arena Dispose racing calls", 200);
        long done = 0, refused = 0;
        for (int round = 0; round < 30; round++)
        {
            var arena = HostArena.Create(512, "pagelab-lifetime");
            var unexpected = new List<Exception>();
            var callers = Enumerable.Range(0, 3).Select(c => new Thread(() =>
            {
                var rng = new Random(c + round * 11);
                try
                {
                    while (true)
                    {
                        var f = new HostFrame((uint)rng.Next(512));
                        switch (rng.Next(6))
                        {
                            case 0: arena.Release(arena.Allocate((uint)rng.Next(1, 8))); break;
                            case 1: _ = arena.Counts; _ = arena.Sharing; break;
                            case 2: _ = arena.StateOf(f); _ = arena.OwnerOf(f); _ = arena.SharersOf(f); break;
                            case 3: _ = arena.OwnedBy(rng.Next(1, 100)); break;
                            case 4:
                                using (GuestVm vm = GuestVm.Create(arena, $"v{c}", 16, 8, hostSwap: false))
                                {
                                    vm.Back(new GuestPage(3), 2);
                                    vm.Page(new GuestPage(3))[0] = 7;
                                    vm.Page(new GuestPage(9))[1] = 8; // a demand-zero fault
                                }
                                break;
                            case 5:
                                HostFrame[] held = arena.Allocate(1);
                                arena.ZeroInPlace(held);
                                arena.Release(held);
                                break;
                        }
                        Interlocked.Increment(ref done);
                    }
                }
                catch (ObjectDisposedException) { Interlocked.Increment(ref refused); }
                catch (ArenaExhaustedException) { }
                catch (Exception e) { lock (unexpected) unexpected.Add(e); }
            })).ToList();
            callers.ForEach(c => c.Start());
            Thread.Sleep(2 + round % 5);
            // Two Disposes at once, and a third later: the engine's tables are freed once, after the last call.
            var second = new Thread(arena.Dispose);
            second.Start();
            arena.Dispose();
            second.Join();
            arena.Dispose();
            callers.ForEach(c => c.Join());
            Assert.Empty(unexpected);
            Assert.Throws<ObjectDisposedException>(() => arena.Counts);
            Assert.Throws<ObjectDisposedException>(() => arena.StateOf(new HostFrame(0)));
            Assert.Throws<ObjectDisposedException>(() => GuestVm.Create(arena, "late", 4, hostSwap: false));
        }
        Assert.True(done > 100 && refused > 0, $"{done} calls done, {refused} refused");
    }

    [Fact]
    public void A_vm_keeps_its_arena_alive_after_the_arena_is_disposed_and_frees_it_when_disposed_itself()
    {
        if (!InChild(nameof(A_vm_keeps_its_arena_alive_after_the_arena_is_disposed_and_frees_it_when_disposed_itself), PassedInChild)) return;
        var arena = HostArena.Create(64, "pagelab-lifetime");
        GuestVm vm = GuestVm.Create(arena, "outlives", 8, 4, hostSwap: false);
        vm.RefillPool();
        arena.Dispose();
        Assert.Throws<ObjectDisposedException>(() => arena.Allocate(1));
        Assert.Throws<ObjectDisposedException>(() => GuestVm.Create(arena, "late", 4, hostSwap: false));
        // The VM still works: its frames, the host view and the memfd stay until it is gone.
        vm.Page(new GuestPage(2))[5] = 42;
        Assert.Equal(42, vm.Page(new GuestPage(2))[5]);
        vm.Dispose();
        vm.Dispose();
        Assert.Throws<ObjectDisposedException>(() => vm.StateOf(new GuestPage(2)));
    }

    [Fact]
    public void A_span_used_after_its_vm_is_disposed_faults_and_never_reaches_the_next_vm()
    {
        if (!InChild(nameof(A_span_used_after_its_vm_is_disposed_faults_and_never_reaches_the_next_vm), DiedOfTheStaleTouch)) return;
        using var t = new TestArena(64);
        GuestVm a = t.Vm("a", 4, 4);
        a.Back(new GuestPage(0), 1);
        a.Page(new GuestPage(0)).Fill((byte)'A');
        Span<byte> stale = a.Page(new GuestPage(0));
        long aStart = a.Base, aEnd = a.Base + 4 * t.Arena.PageSize;
        a.Dispose();
        GuestVm b = t.Vm("b", 4, 4);
        b.Back(new GuestPage(0), 1);
        b.Page(new GuestPage(0)).Fill((byte)'B');
        Assert.False(b.Base < aEnd && aStart < b.Base + 4 * t.Arena.PageSize, "the next VM was placed over the disposed one");
        Console.WriteLine("touching the stale span");
        Console.Out.Flush();
        byte got = stale[0];
        Console.WriteLine($"stale span read '{(char)got}'");
        Console.Out.Flush();
    }

    [Fact]
    public void A_span_whose_vm_was_finalized_faults_and_never_reaches_the_next_vm()
    {
        if (!InChild(nameof(A_span_whose_vm_was_finalized_faults_and_never_reaches_the_next_vm), DiedOfTheStaleTouch)) return;
        var arena = HostArena.Create(64, "pagelab-lifetime");
        Span<byte> stale = SpanOfAnUnreachableVm(arena);
        for (int i = 0; i < 3; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        GuestVm b = GuestVm.Create(arena, "b", 4, 4, hostSwap: false);
        b.Back(new GuestPage(0), 1);
        b.Page(new GuestPage(0)).Fill((byte)'B');
        Console.WriteLine("touching the stale span");
        Console.Out.Flush();
        stale[0] = (byte)'X';
        Console.WriteLine($"stale span read '{(char)b.Page(new GuestPage(0))[0]}' through the next VM");
        Console.Out.Flush();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static Span<byte> SpanOfAnUnreachableVm(HostArena arena)
    {
        GuestVm a = GuestVm.Create(arena, "a", 4, 4, hostSwap: false);
        a.Back(new GuestPage(0), 1);
        a.Page(new GuestPage(0)).Fill((byte)'A');
        return a.Page(new GuestPage(0)); // `a` is unreachable from here on: its finalizer may destroy the region
    }

    [Fact]
    public void An_arena_and_its_vms_left_to_the_finalizer_go_back_to_the_OS_with_no_crash()
    {
        if (!InChild(nameof(An_arena_and_its_vms_left_to_the_finalizer_go_back_to_the_OS_with_no_crash), PassedInChild)) return;
        const string name = "pagelab-finalized";
        for (int i = 0; i < 20; i++) LeaveToTheFinalizer(name);
        for (int i = 0; i < 5 && MemfdsNamed(name) > 0; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        // The regions were destroyed first (each holds its arena), then the arenas, then the memfds closed.
        Assert.Equal(0, MemfdsNamed(name));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void LeaveToTheFinalizer(string name)
    {
        var arena = HostArena.Create(64, name);
        for (int v = 0; v < 2; v++)
        {
            GuestVm vm = GuestVm.Create(arena, $"left{v}", 8, 4);
            vm.Back(new GuestPage(1), 2);
            vm.Page(new GuestPage(1))[0] = 1;
            vm.Page(new GuestPage(5))[0] = 2; // a demand fault
        }
    }

    private static int MemfdsNamed(string name) =>
        new DirectoryInfo("/proc/self/fd").GetFileSystemInfos().Count(f => f.LinkTarget?.Contains($"memfd:{name}") == true);

    [Fact]
    public void A_new_vm_is_never_placed_where_a_disposed_vm_was_and_the_old_range_stays_inaccessible()
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("reads /proc/self/maps (Linux)");
        using var t = new TestArena(256);
        var gone = new List<(long Start, long End)>();
        for (int i = 0; i < 200; i++)
        {
            ulong pages = (ulong)(1 + i * 7 % 32);
            using GuestVm vm = GuestVm.Create(t.Arena, $"v{i}", pages, 4, hostSwap: false);
            long start = vm.Base, end = vm.Base + (long)pages * t.Arena.PageSize;
            Assert.DoesNotContain(gone, g => start < g.End && g.Start < end);
            vm.Back(new GuestPage(0), 1);
            vm.Page(new GuestPage(0))[0] = 1;
            gone.Add((start, end));
        }
        // Every destroyed range is still reserved, with no access and no frame of the arena behind it.
        var maps = File.ReadAllLines("/proc/self/maps").Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)).Select(f =>
        {
            string[] range = f[0].Split('-');
            return (Start: Convert.ToInt64(range[0], 16), End: Convert.ToInt64(range[1], 16), Perms: f[1], Path: f.Length > 5 ? f[5] : "");
        }).ToList();
        foreach ((long start, long end) in gone)
        {
            var covering = maps.Where(m => m.Start < end && start < m.End).ToList();
            Assert.True(covering.Count > 0 && covering.Min(m => m.Start) <= start && covering.Max(m => m.End) >= end, $"{start:x}-{end:x} is not reserved");
            Assert.All(covering, m => Assert.True(m.Perms.StartsWith("---") && m.Path == "", $"{start:x}-{end:x} maps {m.Perms} {m.Path}"));
        }
    }
}
