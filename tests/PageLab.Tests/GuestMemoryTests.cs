// Guest views over the arena: bytes meet through the host view, remaps switch frames, bad requests change nothing.
using PageLab.Core;
using PageLab.Core.Faults;
using PageLab.Core.Guest;
using PageLab.Core.Host;

namespace PageLab.Tests;

public class GuestMemoryTests
{
    [Fact]
    public void Bytes_written_through_a_guest_view_are_read_through_the_host_view_of_its_frame()
    {
        using var t = new TestArena(64);
        GuestVm vm = t.Vm("a", 16);
        vm.Back(new GuestPage(3), 4);

        vm.Page(new GuestPage(4)).Fill(0x5A);
        HostFrame frame = vm.Translate(new GuestPage(4))!.Value;

        Assert.All(t.Arena.FrameBytes(frame).ToArray(), b => Assert.Equal(0x5A, b));
        Assert.Equal(FrameState.Guest, t.Arena.StateOf(frame));
        Assert.Equal(vm.Id, t.Arena.OwnerOf(frame));
    }

    [Fact]
    public void After_a_remap_the_guest_sees_the_new_frame_and_the_old_frame_is_untouched()
    {
        using var t = new TestArena(64);
        GuestVm vm = t.Vm("a", 8);
        vm.Back(new GuestPage(2), 1);
        vm.Page(new GuestPage(2)).Fill(0x11);
        HostFrame oldFrame = vm.Translate(new GuestPage(2))!.Value;

        HostFrame[] fresh = t.Arena.Allocate(1);
        t.Arena.FrameBytes(fresh[0]).Fill(0x22);
        HostFrame[] previous = vm.Map(new GuestPage(2), fresh);

        Assert.Equal([oldFrame], previous);
        Assert.Equal(fresh[0], vm.Translate(new GuestPage(2)));
        Assert.All(vm.Page(new GuestPage(2)).ToArray(), b => Assert.Equal(0x22, b));
        vm.Page(new GuestPage(2)).Fill(0x33);
        Assert.All(t.Arena.FrameBytes(oldFrame).ToArray(), b => Assert.Equal(0x11, b));
        Assert.Equal(FrameState.Held, t.Arena.StateOf(oldFrame));
        t.Arena.Release(previous);
    }

    [Fact]
    public void A_contiguous_run_is_one_mapping_and_the_kernel_agrees()
    {
        using var t = new TestArena(256);
        GuestVm vm = t.Vm("a", 128);
        Assert.Equal(1, vm.MappingCount);
        Assert.Equal(1, KernelMappings(vm));

        vm.Back(new GuestPage(0), 128);                       // one run of frames
        Assert.Equal(1, vm.MappingCount);
        Assert.Equal(1, KernelMappings(vm));

        // Swap every other page onto scattered frames: each swapped page is its own mapping.
        HostFrame[] scattered = t.Arena.Allocate(64);
        for (int i = 0; i < 32; i++)
            t.Arena.Release(vm.Map(new GuestPage((ulong)i * 4), [scattered[63 - i * 2]]));
        long model = vm.MappingCount;
        Assert.True(model > 32, $"model {model}");
        Assert.Equal(KernelMappings(vm), model);

        vm.Unback(new GuestPage(0), 128);
        Assert.Equal(1, vm.MappingCount);
        Assert.Equal(1, KernelMappings(vm));
    }

    [Fact]
    public void A_remap_of_a_long_scattered_run_moves_every_frame_and_the_mapping_count_stays_true()
    {
        // 600 pages: past MapFrames' stack buffers (256) and past the engine's 64-page batches of the frame table.
        using var t = new TestArena(1300);
        GuestVm vm = t.Vm("long", 600);
        vm.Back(new GuestPage(0), 600);
        uint[] before = Snapshot(vm);
        HostFrame[] fresh = t.Arena.Allocate(600);
        new Random(7).Shuffle(fresh);
        FrameCounts counts = t.Arena.Counts;

        HostFrame[] previous = vm.Map(new GuestPage(0), fresh);

        Assert.Equal(before.Select(f => new HostFrame(f)), previous);
        Assert.Equal(fresh.Select(f => f.Value), Snapshot(vm));
        Assert.All(previous, f => Assert.Equal(FrameState.Held, t.Arena.StateOf(f)));
        Assert.All(fresh, f => Assert.Equal(vm.Id, t.Arena.OwnerOf(f)));
        Assert.Equal(counts, t.Arena.Counts);
        Assert.Equal(600, vm.HeldFrames);
        Assert.Equal(KernelMappings(vm), vm.MappingCount);
        Assert.Empty(FrameAccounting.Check(t.Arena, [vm], previous.Select(f => f.Value).ToHashSet()));
        t.Arena.Release(previous);
    }

    [Fact]
    public void A_run_that_names_a_frame_twice_is_refused_naming_it_and_changes_nothing()
    {
        using var t = new TestArena(64);
        GuestVm vm = t.Vm("twice", 16);
        vm.Back(new GuestPage(0), 8);
        uint[] before = Snapshot(vm);
        HostFrame[] held = t.Arena.Allocate(3);
        FrameCounts counts = t.Arena.Counts;

        var e = Assert.Throws<ArgumentException>(() => vm.Map(new GuestPage(2), [held[2], held[0], held[2]]));

        Assert.Contains($"{held[2]} appears twice", e.Message);
        Assert.Equal(before, Snapshot(vm));
        Assert.Equal(counts, t.Arena.Counts);
        Assert.All(held, f => Assert.Equal(FrameState.Held, t.Arena.StateOf(f)));
        t.Arena.Release(held);
    }

    [Fact]
    public void Bad_requests_name_their_values_and_leave_the_vm_unchanged()
    {
        using var t = new TestArena(8);
        GuestVm vm = t.Vm("bad", 16);
        vm.Back(new GuestPage(0), 4);
        vm.Page(new GuestPage(1)).Fill(7);
        uint[] before = Snapshot(vm);
        FrameCounts counts = t.Arena.Counts;

        var outside = Assert.Throws<ArgumentOutOfRangeException>(() => vm.Back(new GuestPage(16), 1));
        Assert.Contains("16..16", outside.Message);
        var crossing = Assert.Throws<ArgumentOutOfRangeException>(() => vm.Unback(new GuestPage(14), 3));
        Assert.Contains("14..16", crossing.Message);
        Assert.Contains("last page 15", crossing.Message);
        var tooMany = Assert.Throws<ArenaExhaustedException>(() => vm.Back(new GuestPage(4), 12));
        Assert.Contains("requested 12 frames", tooMany.Message);
        Assert.Contains("4 free of 8", tooMany.Message);
        var twice = Assert.Throws<InvalidOperationException>(() => vm.Back(new GuestPage(2), 4));
        Assert.Contains("gpage 2 is already backed", twice.Message);
        var notHeld = Assert.Throws<FrameStateException>(() => vm.Map(new GuestPage(8), [vm.Translate(new GuestPage(0))!.Value]));
        Assert.Contains("expected Held", notHeld.Message);
        var badFrame = Assert.Throws<ArgumentOutOfRangeException>(() => vm.Map(new GuestPage(8), [new HostFrame(8)]));
        Assert.Contains("frames 0..7", badFrame.Message);

        Assert.Equal(before, Snapshot(vm));
        Assert.Equal(counts, t.Arena.Counts);
        Assert.All(vm.Page(new GuestPage(1)).ToArray(), b => Assert.Equal(7, b));
    }

    [Fact]
    public void Passing_the_mapping_budget_fails_naming_the_sysctl_and_changes_nothing()
    {
        using var t = new TestArena(64);
        GuestVm vm = t.Vm("maps", 32);
        vm.Back(new GuestPage(0), 32);
        HostFrame[] scattered = t.Arena.Allocate(8);
        uint[] before = Snapshot(vm);
        long maps = vm.MappingCount;
        long saved = FaultEngine.MapBudget;
        FaultEngine.MapBudget = FaultEngine.MapsInUse + 2;
        try
        {
            // Pages 0, 4, 8, 12 onto frames that break the run: +2 mappings each; the second one passes.
            Assert.Equal([new HostFrame(before[4])], vm.Map(new GuestPage(4), [scattered[0]]));
            var e = Assert.Throws<MapLimitException>(() => vm.Map(new GuestPage(12), [scattered[2]]));
            Assert.Contains("vm.max_map_count", e.Message);
            Assert.Contains("sysctl -w vm.max_map_count=", e.Message);
            Assert.Equal(before.Select((f, g) => g == 4 ? scattered[0].Value : f), Snapshot(vm));
            Assert.Equal(maps + 2, vm.MappingCount);
            Assert.Equal(FrameState.Held, t.Arena.StateOf(scattered[2]));
            Assert.Equal(KernelMappings(vm), vm.MappingCount);
        }
        finally
        {
            FaultEngine.MapBudget = saved;
        }
    }

    internal static uint[] Snapshot(GuestVm vm) =>
        Enumerable.Range(0, (int)vm.PageCount).Select(g => vm.Translate(new GuestPage((ulong)g))?.Value ?? uint.MaxValue).ToArray();

    /// <summary>VMAs the kernel has inside the VM's range, from /proc/self/maps.</summary>
    internal static long KernelMappings(GuestVm vm)
    {
        if (!OperatingSystem.IsLinux()) Assert.Skip("Linux only: compares with the kernel's VMAs in /proc/self/maps (vm.max_map_count)");
        ulong lo = (ulong)vm.Base, hi = lo + vm.PageCount * (ulong)vm.Arena.PageSize;
        long n = 0;
        foreach (string line in File.ReadLines("/proc/self/maps"))
        {
            string[] range = line[..line.IndexOf(' ')].Split('-');
            ulong s = Convert.ToUInt64(range[0], 16), e = Convert.ToUInt64(range[1], 16);
            if (s < hi && e > lo) n++;
        }
        return n;
    }
}
