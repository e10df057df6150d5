// The counters the engine shares with C# have one layout on both sides: the C struct's fields (names and
// byte offsets, reported by the engine itself) against the C# mirror's, field by field; the kernel-error
// counts by name and order.
using System.Reflection;
using System.Runtime.InteropServices;
using PageLab.Core.Guest;
using Lib = PageLab.Native.Interop.PageLab;

namespace PageLab.Tests;

public unsafe class NativeLayoutTests
{
    private static string Pascal(string snake) =>
        string.Concat(snake.Split('_').Select(w => char.ToUpperInvariant(w[0]) + w[1..]));

    private static (string Name, uint Offset)[] CLayout(out uint size)
    {
        const int Cap = 64;
        byte** names = stackalloc byte*[Cap];
        uint* offsets = stackalloc uint[Cap];
        int n = Lib.CountersLayout(names, offsets, Cap, out size);
        Assert.InRange(n, 1, Cap);
        var fields = new (string, uint)[n];
        for (int i = 0; i < n; i++) fields[i] = (Marshal.PtrToStringUTF8((nint)names[i])!, offsets[i]);
        return fields;
    }

    [Fact]
    public void Region_counters_have_the_same_fields_at_the_same_offsets_in_C_and_CSharp()
    {
        var c = CLayout(out uint cSize);
        var cs = typeof(Lib.RegionCounters).GetFields(BindingFlags.Public | BindingFlags.Instance)
            .Select(f => (f.Name, Offset: (uint)Marshal.OffsetOf<Lib.RegionCounters>(f.Name)))
            .OrderBy(f => f.Offset).ToArray();

        Assert.Equal(c.Select(f => (Pascal(f.Name), f.Offset)), cs);
        Assert.Equal(cSize, (uint)sizeof(Lib.RegionCounters));
        Assert.Equal(c.Length, Lib.RegionCounters.Count);
    }

    [Fact]
    public void Kernel_error_counts_have_the_same_names_in_the_same_order_in_C_and_CSharp()
    {
        const int Cap = 64;
        byte** names = stackalloc byte*[Cap];
        int n = Lib.KernelErrorCountsLayout(names, Cap);
        Assert.InRange(n, 1, Cap);
        var c = Enumerable.Range(0, n).Select(i => names[i] == null ? "(unnamed)" : Pascal(Marshal.PtrToStringUTF8((nint)names[i])!)).ToArray();
        var cs = typeof(Lib.KernelErrorCounts).GetFields(BindingFlags.Public | BindingFlags.Instance)
            .OrderBy(f => Marshal.OffsetOf<Lib.KernelErrorCounts>(f.Name)).Select(f => f.Name).ToArray();

        Assert.Equal(c, cs);
        Assert.Equal(n * sizeof(ulong), sizeof(Lib.KernelErrorCounts));
        // The public record carries the same counts under the same names.
        Assert.Equal(cs, typeof(PageLab.Core.Faults.KernelErrorCounters).GetConstructors().Single().GetParameters().Select(p => p.Name));
    }

    [Fact]
    public void The_engine_refuses_to_fill_counters_it_does_not_keep()
    {
        using var lab = new TestArena(64);
        GuestVm vm = lab.Vm("layout", 16);
        vm.Page(new PageLab.Core.GuestPage(0))[0] = 1; // one demand fault, so the counters are not all zero
        using RegionUse use = vm.Use();
        ulong* words = stackalloc ulong[Lib.RegionCounters.Count + 1];
        words[Lib.RegionCounters.Count] = 0xDEAD;
        // Asking for one counter more than the engine keeps is refused and nothing is written.
        Assert.Equal(Lib.EINVAL, Lib.RegionCountersGet(use.Id, words, Lib.RegionCounters.Count + 1));
        Assert.Equal(0xDEADUL, words[Lib.RegionCounters.Count]);
        // Asking for exactly the struct fills it, each counter by name: the fault shows as a demand fault.
        Lib.RegionCounters c;
        Assert.Equal(0, Lib.RegionCountersGet(use.Id, (ulong*)&c, Lib.RegionCounters.Count));
        Assert.Equal(1UL, c.DemandFaults);
    }
}
