// Builds a scenario's world: the arena, the scheduler and its policy, and per VM the guest, its OS, balloon,
// kernel under recovery, free-page reporting, image and workload; and takes it all down again.
using PageLab.Core.Balloon;
using PageLab.Core.Condition;
using PageLab.Core.Recovery;
using PageLab.Core.Guest;
using PageLab.Core.GuestOs;
using PageLab.Core.Host;
using PageLab.Core.Scheduling;
using PageLab.Lab.Workloads;
using PageLab.Lab.Observation;
using PageLab.Core;

namespace PageLab.Lab.Scenarios;

public sealed partial class ScenarioRunner
{
    /// <param name="policy">The allocation policy (default: the one the scenario names).</param>
    public ScenarioRunner(Scenario scenario, string? swapDirectory = null, IAllocationPolicy? policy = null)
    {
        _tempDirectory = swapDirectory ?? Path.GetTempPath();
        scenario.Validate();
        policy ??= CreatePolicy(scenario.PolicyName);    // before any memory is made: it may be refused
        Scenario = scenario;
        _rng = new Random(scenario.Seed);
        const uint pool = 64;
        // Host memory for guests, plus room for every demand pool and for frames in flight in a step.
        // Plus the kernels' parity frames and one fresh frame per injected error.
        uint parity = (uint)scenario.Vms.Sum(v => (long)v.KernelPages / 8 + 2);
        uint frames = checked((uint)scenario.HostPages + pool * (uint)scenario.Vms.Count + (uint)scenario.BatchPages
                              + parity + (uint)scenario.Injections.Count);
        Arena = HostArena.Create(frames, $"pagelab-{scenario.Name}");
        Scheduler = new MemoryScheduler(Arena, new SchedulerOptions
        {
            HostPages = scenario.HostPages, IdleTax = scenario.IdleTax, BatchPages = scenario.BatchPages,
            Policy = policy, Seed = scenario.Seed,
            WorkConserving = scenario.WorkConserving && policy.Traits.WorkConserving,
            Reclamation = ReclamationParse.Parse(scenario.Reclamation), ScanPagesPerStep = scenario.ScanPagesPerTick,
        });
        try
        {
            foreach (VmSpec spec in scenario.Vms)
            {
                GuestVm vm = GuestVm.Create(Arena, spec.Name, spec.Pages, pool);
                _unscheduled = vm;
                if (spec.Sharing && Scheduler.Options.Reclamation.HasFlag(Reclamation.Share)) vm.EnableSharing();
                vm.SetFaultAround(scenario.FaultAroundPages);
                var os = new GuestOperatingSystem(vm, new GuestOsOptions { SwapDirectory = swapDirectory, Swappiness = spec.Swappiness });
                // A VM that shares writes the shareable balloon value, so balloon pages left mapped collapse onto one frame.
                var app = new BalloonApplication(os, vm.Id, shareableValue: vm.SharingEnabled);
                Scheduler.Add(os, app, spec.Shares, spec.MinPages, spec.MaxPages ?? spec.Pages, scenario.InitialOf(spec));
                _unscheduled = null;
                _recovery.Add(BootKernel(os, spec.KernelPages));
                _reporting.Add(spec.FreePageReporting is { } fpr
                    ? new FreePageReporting(os, new FreePageReportingOptions { DelayTicks = fpr.DelayTicks, FractionPerPass = fpr.FractionPerPass })
                    : null);
                _images.Add(spec.Image is { } image ? new ImageWorkload(os, image) : null);
                _workloads.Add(CreateWorkload(os, spec, scenario, _tempDirectory));
                if (os.PageCacheIfUsed is { } cache) ProtectPageCache(cache, _recovery[^1].Engine);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
        Condition = new ConditionService(Scheduler);
        // An application adapts to the hypervisor's condition (the hypercall) or to its guest's free memory.
        for (int i = 0; i < _workloads.Count; i++)
            if (_workloads[i] is IApplicationWorkload app)
            {
                string name = Scheduler.Vms[i].Vm.Name;
                app.FollowCondition(Condition.Thresholds, previous => Condition.GuestOsReport(name, previous), () => Condition.Query(name));
            }
        Scheduler.FramesMoved += _moves.Add;
        _metrics = PageLabMetrics.Register(scenario.Name);
    }

    // A user's policy is loaded only now, when the scenario runs (checking one loads nothing).
    private static IAllocationPolicy CreatePolicy(string name)
    {
        try
        {
            return PolicyCatalog.Create(name);
        }
        catch (ArgumentException e)
        {
            throw new ScenarioException("scenario", "policy", e.Message);
        }
    }

    // The guest kernel: a pinned process whose pages are written at boot and protected by parity, as
    // the policy says for kernel-like pages. An error in a user page kills only the process using it.
    private static (GuestProcess, RecoveryEngine) BootKernel(GuestOperatingSystem os, ulong pages)
    {
        GuestProcess kernel = os.Spawn("kernel", pages, pinned: true);
        var gpas = new List<GuestPage>();
        for (ulong v = 0; v < pages; v++)
        {
            System.Runtime.InteropServices.MemoryMarshal.Cast<byte, ulong>(kernel.Page(v)).Fill(0x6B65726E656C0000UL | v);
            gpas.Add(os.Translate(kernel, v)!.Value);
        }
        var engine = new RecoveryEngine(os.Vm);
        engine.Protect(gpas, PageCategory.KernelLike);
        engine.Unrecoverable = os.MemoryFailure;
        return (kernel, engine);
    }

    // Page-cache pages are clean pages with a disk location (their file's offset on the guest's disk): recovery
    // refills one an error hits from its file, as the policy says for clean pages with a disk copy.
    private static void ProtectPageCache(PageCache cache, RecoveryEngine engine)
    {
        engine.UseDiskFile(cache.Disk);
        cache.CleanPages = (pages, offsets) =>
        {
            var at = new Dictionary<GuestPage, long>(pages.Length);
            for (int i = 0; i < pages.Length; i++) at[pages[i]] = offsets[i];
            engine.Protect(pages, PageCategory.CleanWithDiskCopy, g => at[g]);
        };
    }

    // The workload's kind starts it: by default in a process named after the kind with as many virtual pages as
    // the VM (an application in the run of guest pages its heap reserves), with the run's temporary directory.
    private static IWorkload CreateWorkload(GuestOperatingSystem os, VmSpec spec, Scenario scenario, string tempDirectory)
    {
        IWorkloadKind kind = WorkloadKinds.Find(spec.Workload.Kind)
                             ?? throw new ScenarioException("scenario", $"vms[{spec.Name}].workload.kind", WorkloadKinds.Unknown(spec.Workload.Kind));
        return kind.Start(spec.Workload, os, scenario.WorkloadContextOf(spec, tempDirectory));
    }

    public void Dispose()
    {
        // Workloads first (a trace's open file; an application frees its heap before the VM it lives in goes).
        foreach (IWorkload w in _workloads) (w as IDisposable)?.Dispose();
        _metrics?.Dispose();
        foreach (ScheduledVm v in Scheduler?.Vms ?? [])
        {
            v.Os.Dispose();
            v.Vm.Dispose();
        }
        _unscheduled?.Dispose();
        Arena?.Dispose();
    }
}
