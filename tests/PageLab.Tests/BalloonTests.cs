// Ballooning on real memory: frames really move between VMs, no byte of the source reaches the
// target, and a lying or broken balloon application is refused without harm.
using PageLab.Core;
using PageLab.Core.Balloon;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Scheduling;

namespace PageLab.Tests;

/// <summary>A host with a scheduler and VMs, torn down in order even when an assertion fails.</summary>
internal sealed class TestHost : IDisposable
{
    private readonly TestArena _arena;

    public TestHost(ulong hostPages, bool adaptive = false)
    {
        _arena = new TestArena((uint)hostPages + 1024);
        Scheduler = new MemoryScheduler(_arena.Arena, new SchedulerOptions
        {
            HostPages = hostPages, BatchPages = 128, WorkConserving = false,
            Policy = adaptive ? new EsxPolicy() : new StaticPolicy(),
        });
    }

    public HostArena Arena => _arena.Arena;
    public MemoryScheduler Scheduler { get; }

    public ScheduledVm Vm(string name, ulong pages, ulong allocation, BalloonBehaviour behaviour = BalloonBehaviour.Honest)
    {
        GuestVm vm = _arena.Vm(name, pages, pool: 64);
        var os = new GuestOperatingSystem(vm, new GuestOsOptions { LowWaterPages = 16, HighWaterPages = 48 });
        return Scheduler.Add(os, new BalloonApplication(os, vm.Id, behaviour), 1000, 0, pages, allocation);
    }

    /// <summary>Steps until no balloon moves (bounded).</summary>
    public void Settle(int maxSteps = 200)
    {
        for (int i = 0; i < maxSteps; i++)
        {
            StepReport r = Scheduler.Step();
            if (r.Inflated.Values.Sum() == 0 && r.Deflated.Values.Sum() == 0) return;
        }
    }

    public List<string> Accounting() => FrameAccounting.Check(Arena, Scheduler.Vms.Select(v => v.Vm).ToList());

    public void Dispose()
    {
        foreach (ScheduledVm v in Scheduler.Vms) v.Os.Dispose();
        _arena.Dispose();
    }
}

public class BalloonTests
{
    private const ulong Secret = 0x5EC2E7_5EC2E7_5Eul;

    [Fact]
    public void A_transfer_maps_the_sources_frame_into_the_target_and_unbacks_the_source()
    {
        using var h = new TestHost(600);
        ScheduledVm src = h.Vm("src", 512, 300), dst = h.Vm("dst", 512, 300);
        Fill(src.Os.Spawn("app", 512), 250, 0x11);
        h.Settle();
        var srcFrames = FramesOf(src.Vm);

        src.AllocationPages = 200;
        dst.AllocationPages = 400;
        h.Settle();

        Assert.True(h.Scheduler.TransferredFrames >= 64, $"transferred {h.Scheduler.TransferredFrames}");
        var moved = FramesOf(dst.Vm).Where(kv => srcFrames.ContainsValue(kv.Value)).ToList();
        Assert.NotEmpty(moved);
        foreach ((ulong dstPage, HostFrame f) in moved)
        {
            ulong srcPage = srcFrames.First(kv => kv.Value == f).Key;
            Assert.NotEqual(f, src.Vm.Translate(new GuestPage(srcPage)));             // the source no longer has it
            Assert.Equal(dst.Vm.Id, h.Arena.OwnerOf(f));
        }
        (ulong page, HostFrame frame) = moved[0];
        h.Arena.FrameBytes(frame)[123] = 0xC3;                                     // host view in...
        Assert.Equal(0xC3, dst.Vm.Page(new GuestPage(page))[123]);                 // ...target's guest view out
        Assert.True(src.Vm.HeldFrames <= 200 + 64, $"source holds {src.Vm.HeldFrames} frames for an allocation of 200 (+ a pool of 64)");
        Assert.Empty(h.Accounting());
    }

    [Fact]
    public void No_byte_of_a_secret_in_the_source_is_readable_in_the_target_after_ballooning()
    {
        using var h = new TestHost(700);
        ScheduledVm src = h.Vm("src", 512, 450), dst = h.Vm("dst", 512, 250);
        GuestProcess secret = src.Os.Spawn("secret", 512);
        Fill(secret, 400, Secret);
        h.Settle();

        src.AllocationPages = 150;                                                  // the source must give 300 pages
        dst.AllocationPages = 550;
        h.Settle();

        Assert.True(h.Scheduler.TransferredFrames >= 200, $"transferred {h.Scheduler.TransferredFrames}");
        Assert.True(secret.SwappedOut > 0, "the guest paged the secret out to make room for the balloon");
        Assert.Equal(0, CountPattern(dst.Vm, Secret));
        Assert.Empty(h.Accounting());
    }

    [Fact]
    public void A_tampered_balloon_page_is_refused_and_its_content_stays_in_the_source()
    {
        using var h = new TestHost(600);
        ScheduledVm src = h.Vm("src", 512, 300), dst = h.Vm("dst", 512, 300);
        h.Settle();
        src.Balloon.SetTarget(src.Backend.ActualPages + 16);
        List<BalloonReport> reports = src.Balloon.Inflate(16);
        BalloonReport tampered = reports[5];
        src.Vm.Page(tampered.ClaimedPage).Fill(0x5E);                               // the guest overwrites the value

        ReclaimResult r = src.Backend.Reclaim(reports);

        Assert.Equal(15, r.Frames.Length);
        Assert.Equal(1, r.Refused[RefusalReason.ValueMismatch]);
        Assert.All(r.Frames, f => Assert.True(h.Arena.FrameBytes(f).IndexOfAnyExcept((byte)0) < 0, $"{f} was scrubbed"));
        Assert.Equal(GuestPageState.Backed, src.Vm.StateOf(tampered.ClaimedPage)); // stayed with its VM
        Assert.Equal(0x5E, src.Vm.Page(tampered.ClaimedPage)[77]);
        int used = dst.Backend.Deflate(0, r.Frames);
        h.Arena.Release(r.Frames.AsSpan(used).ToArray());
        Assert.Equal(0, CountByte(dst.Vm, 0x5E));
        Assert.Empty(h.Accounting());
    }

    [Fact]
    public void Data_behind_a_right_value_reaches_the_target_as_zeros()
    {
        // The value identifies a balloon page; it is no promise about the rest. A guest that keeps the
        // header and writes a secret behind it (as a racing vCPU could after the check) gets its page
        // taken, and the target reads zeros where the secret was.
        using var h = new TestHost(600);
        ScheduledVm src = h.Vm("src", 512, 300), dst = h.Vm("dst", 512, 300);
        h.Settle();
        dst.Balloon.SetTarget(dst.Backend.ActualPages + 16);
        h.Arena.Release(dst.Backend.Inflate(16).Frames);                           // holes in the target to fill
        src.Balloon.SetTarget(src.Backend.ActualPages + 16);
        List<BalloonReport> reports = src.Balloon.Inflate(16);
        foreach (BalloonReport rep in reports)
            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(src.Vm.Page(rep.ClaimedPage)[BalloonTag.HeaderBytes..]).Fill(Secret);

        ReclaimResult r = src.Backend.Reclaim(reports);
        dst.Balloon.SetTarget(dst.Backend.ActualPages - 16);
        int used = dst.Backend.Deflate(16, r.Frames);

        Assert.Equal(16, r.Frames.Length);                                           // accepted: the value was right
        Assert.Equal(16, used);
        Assert.All(reports, rep => Assert.Equal(GuestPageState.Unbacked, src.Vm.StateOf(rep.ClaimedPage)));
        Assert.All(r.Frames, f => Assert.Equal(dst.Vm.Id, h.Arena.OwnerOf(f)));
        Assert.All(r.Frames, f => Assert.True(h.Arena.FrameBytes(f).IndexOfAnyExcept((byte)0) < 0, $"{f} is all zero"));
        Assert.Equal(0, CountPattern(dst.Vm, Secret));
        Assert.Empty(h.Accounting());
    }

    [Theory]
    [InlineData(BalloonBehaviour.NeverWritesValue, RefusalReason.ValueMismatch)]
    [InlineData(BalloonBehaviour.ReportsTwice, RefusalReason.Duplicate)]
    [InlineData(BalloonBehaviour.ReportsForeignPages, RefusalReason.ClaimMismatch)]
    public void A_lying_balloon_is_refused_and_cannot_touch_another_vm_or_the_accounting(BalloonBehaviour lie, RefusalReason expected)
    {
        using var h = new TestHost(600);
        ScheduledVm liar = h.Vm("liar", 512, 300, lie), other = h.Vm("other", 512, 300);
        Fill(liar.Os.Spawn("victim", 512), 100, 0x77);
        GuestProcess bystander = other.Os.Spawn("bystander", 512);
        Fill(bystander, 200, 0x42);

        liar.Balloon.SetTarget(64);
        ReclaimResult r = liar.Backend.Reclaim(liar.Balloon.Inflate(64));

        Assert.True(r.Refused.GetValueOrDefault(expected) >= 1, $"refused {string.Join(", ", r.Refused)}");
        if (lie == BalloonBehaviour.ReportsTwice) Assert.Equal(r.Refused[expected], r.Frames.Length); // each page once
        else Assert.Empty(r.Frames);
        // Reports naming pages outside the balloon's reach are refused too.
        ReclaimResult forged = liar.Backend.Reclaim([
            new BalloonReport(9999, new GuestPage(0), 1),
            new BalloonReport(500, new GuestPage(0), 1),
        ]);
        Assert.Equal(1, forged.Refused[RefusalReason.NotItsPage]);
        Assert.Equal(1, forged.Refused[RefusalReason.NotResident]);
        h.Arena.Release(r.Frames);
        for (ulong v = 0; v < 200; v++) Assert.Equal(0x42, bystander.Page(v)[9]);
        Assert.Empty(h.Accounting());
    }

    [Fact]
    public void A_balloon_that_stops_responding_is_detected_and_the_host_stays_consistent()
    {
        using var h = new TestHost(600);
        ScheduledVm mute = h.Vm("mute", 512, 300, BalloonBehaviour.StopsResponding), other = h.Vm("other", 512, 300);
        for (int i = 0; i < 10; i++) h.Scheduler.Step();
        Assert.True(mute.Backend.Unresponsive);
        Assert.False(other.Backend.Unresponsive);
        Assert.Equal(0UL, mute.Backend.ActualPages);
        Assert.Equal(212UL, other.Backend.ActualPages);
        Assert.Empty(h.Accounting());
    }

    [Fact]
    public void The_content_scan_finds_balloon_pages_and_ignores_forged_tags()
    {
        using var h = new TestHost(600);
        ScheduledVm vm = h.Vm("scan", 512, 512);
        vm.Balloon.SetTarget(40);
        List<BalloonReport> reports = vm.Balloon.Inflate(40);                         // written, never reported
        GuestProcess forger = vm.Os.Spawn("forger", 8);
        BalloonTag.Write(forger.Page(0), vm.Vm.Id, reports[0].Vpn, reports[0].Sequence); // a copy in another page

        ReclaimResult r = vm.Backend.ReclaimByContent(1000);

        Assert.Equal(40, r.Frames.Length);
        Assert.Equal(GuestPageState.Backed, vm.Vm.StateOf(vm.Os.Translate(forger, 0)!.Value));
        h.Arena.Release(r.Frames);
        Assert.Empty(h.Accounting());
    }

    internal static void Fill(GuestProcess p, ulong pages, ulong pattern)
    {
        for (ulong v = 0; v < pages; v++)
            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(p.Page(v)).Fill(pattern);
    }

    private static void Fill(GuestProcess p, ulong pages, byte value)
    {
        for (ulong v = 0; v < pages; v++) p.Page(v).Fill(value);
    }

    private static Dictionary<ulong, HostFrame> FramesOf(GuestVm vm)
    {
        var d = new Dictionary<ulong, HostFrame>();
        for (ulong g = 0; g < vm.PageCount; g++)
            if (vm.Translate(new GuestPage(g)) is HostFrame f) d[g] = f;
        return d;
    }

    /// <summary>Occurrences of an 8-byte pattern in every backed page of a VM, read through its frames.</summary>
    private static int CountPattern(GuestVm vm, ulong pattern)
    {
        int n = 0;
        foreach (HostFrame f in FramesOf(vm).Values)
            foreach (ulong w in System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(vm.Arena.FrameBytes(f)))
                if (w == pattern) n++;
        return n;
    }

    private static int CountByte(GuestVm vm, byte value) =>
        FramesOf(vm).Values.Sum(f => vm.Arena.FrameBytes(f).Count(value));
}

public class BalloonPressureTests
{
    [Fact]
    public void A_balloon_backs_off_when_reserving_makes_its_guest_page_heavily_then_retries()
    {
        using var t = new TestArena(1024);
        GuestVm vm = t.Vm("busy", 512, pool: 512);
        vm.RefillPool();
        using var os = new GuestOperatingSystem(vm, new GuestOsOptions { LowWaterPages = 16, HighWaterPages = 112 });
        GuestProcess app = os.Spawn("app", 512);
        for (ulong v = 0; v < 490; v++) app.Page(v)[0] = 1;                  // the guest is nearly full
        var balloon = new BalloonApplication(os, vm.Id);
        balloon.SetTarget(200);

        List<BalloonReport> first = balloon.Inflate(16);                      // forces a reclaim of ~100 pages
        Assert.NotEmpty(first);
        Assert.True(balloon.BackingOff, $"swap-outs {os.Stats.SwapOuts}");
        Assert.Equal(1UL, balloon.BackOffs);
        for (int i = 0; i < 4; i++) Assert.Empty(balloon.Inflate(16));        // out of puff: waits
        Assert.NotEmpty(balloon.Inflate(16));                                   // then retries
    }

    [Fact]
    public void A_guest_under_severe_pressure_gets_pages_back_from_its_balloon_first_and_never_hangs()
    {
        using var t = new TestArena(1024);
        GuestVm vm = t.Vm("oom", 256, pool: 256);
        vm.RefillPool();
        using var os = new GuestOperatingSystem(vm, new GuestOsOptions { LowWaterPages = 8, HighWaterPages = 16, SwapLimitPages = 0 });
        var balloon = new BalloonApplication(os, vm.Id);
        balloon.SetTarget(100);
        while (balloon.ReservedPages < 100) Assert.NotEmpty(balloon.Inflate(32));
        GuestProcess kernel = os.Spawn("kernel", 256, pinned: true);

        for (ulong v = 0; v < 170; v++) kernel.Page(v)[0] = 2;               // more than is free: swap is full

        Assert.True(balloon.DeflatedOnOom > 0, "the balloon gave pages back");
        Assert.True(balloon.ReservedPages < 100);
        Assert.False(kernel.Killed);
        Assert.Equal(0UL, os.Stats.OomKills);
        // With the balloon empty too, the OOM killer ends one process instead of hanging.
        var hog = os.Spawn("hog", 256);
        Assert.Throws<GuestProcessKilledException>(() => { for (ulong v = 0; v < 256; v++) hog.Page(v)[0] = 3; });
        Assert.Equal(1UL, os.Stats.OomKills);
    }
}
