// using-scoped helpers so a failing assertion still tears memory down in the right order (VMs, then arena).
using PageLab.Core.Guest;
using PageLab.Core.Host;

namespace PageLab.Tests;

internal sealed class TestArena : IDisposable
{
    private readonly List<GuestVm> _vms = new();

    public TestArena(uint frames)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsWindows()) Assert.Skip("the host backend and fault engine run on Linux and Windows");
        Arena = HostArena.Create(frames, "pagelab-test");
    }

    public HostArena Arena { get; }

    public GuestVm Vm(string name, ulong pages, uint pool = 64)
    {
        GuestVm vm = GuestVm.Create(Arena, name, pages, pool);
        _vms.Add(vm);
        return vm;
    }

    public void Dispose()
    {
        foreach (GuestVm vm in _vms) vm.Dispose();
        Arena.Dispose();
    }
}
