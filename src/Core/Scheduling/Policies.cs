// The built-in allocation policies: static (the initial partition), esx (Waldspurger, OSDI 2002: sampled
// activity, shares and the idle memory tax) and pagelab (the guest's own working-set report first).
namespace PageLab.Core.Scheduling;

/// <summary>Allocations stay as they are: a static partition, the baseline for comparisons.</summary>
public sealed class StaticPolicy : IAllocationPolicy
{
    public string Name => "static";
    public PolicyTraits Traits => PolicyTraits.Static;
    public ulong[] Allocate(AllocationRequest request) => request.Vms.Select(v => v.AllocationPages).ToArray();
}

/// <summary>ESX as the paper describes it, from sampling only: f is the sampled active fraction of the
/// pages the VM holds, charged over its whole allocation (<see cref="VmSignals.ActiveOverAllocation"/>),
/// and host pages are shared by shares / (f + k(1 - f)) with min and max as floor and cap
/// (<see cref="ShareAllocation.Targets"/>). Kept faithful on purpose: it is the reference.</summary>
public sealed class EsxPolicy : IAllocationPolicy
{
    public string Name => "esx";

    public ulong[] Allocate(AllocationRequest request) =>
        ShareAllocation.Targets(request.Vms.Select(v => new VmDemand(v.Shares, FractionOf(v), v.MinPages, v.MaxPages)).ToList(),
            request.HostPages, request.IdleTax);

    /// <summary>The f the paper's formula is given for this VM.</summary>
    public static double FractionOf(VmSignals v) => v.SampledFractionOfAllocation;
}

/// <summary>PageLab's policy: demand is what the guest says it used (its working-set report over the last
/// <see cref="WindowPeriods"/> periods, resident or swapped, plus its kernel and a margin), which sees a
/// page touched once in several periods that one period's sample misses, and sees the pages the guest
/// had to swap, which sampling of held pages cannot. Host pages first cover each VM's demand, shared by
/// shares where demands pass the host (so shares still decide under contention); what is left is shared
/// by the ESX rule with the idle tax, with the demand as the floor. A VM without a report is charged as
/// ESX would charge it.</summary>
public sealed class PageLabPolicy : IAllocationPolicy
{
    /// <summary>Bin edges the host asks guests for (ages in periods; a bin holds ages up to its edge).</summary>
    public static ReadOnlySpan<int> ReportBins => [0, 1, 2, 3, 5, 7, 15, 31, 63];

    public string Name => "pagelab";
    public ulong EstimatePages(VmSignals vm) => Demand(vm);
    /// <summary>A page used within this many periods is in the working set (one less must be a bin edge).
    /// Six periods see 95% of a working set touched half a time per page per period (1 - e^-3).</summary>
    public int WindowPeriods { get; init; } = 6;
    /// <summary>Margin over the demand: room for the guest's free-page reserve and growth within a period.</summary>
    public double MarginFraction { get; init; } = 0.03;
    public ulong MarginPages { get; init; } = 96;

    public ulong[] Allocate(AllocationRequest request)
    {
        IReadOnlyList<VmSignals> vms = request.Vms;
        var demand = vms.Select(Demand).ToArray();
        // Demand first: every VM's allocation up to its demand, by shares with no idle tax (all of it is used).
        ulong[] covered = ShareAllocation.Targets(
            vms.Select((v, i) => new VmDemand(v.Shares, 1, v.MinPages, Math.Clamp(demand[i], v.MinPages, v.MaxPages))).ToList(),
            request.HostPages, request.IdleTax);
        // The rest by the ESX rule: of the VM's allocation, its demand is active and the rest idle.
        return ShareAllocation.Targets(
            vms.Select((v, i) => new VmDemand(v.Shares, ActiveFraction(demand[i], v.AllocationPages), covered[i], v.MaxPages)).ToList(),
            request.HostPages, request.IdleTax);
    }

    private static double ActiveFraction(ulong demand, ulong allocation) =>
        demand == 0 ? 0 : Math.Min(1, (double)demand / Math.Max(allocation, demand));

    /// <summary>Pages the VM needs: its working set by its own report plus the margin.</summary>
    public ulong Demand(VmSignals v)
    {
        ulong used = v.WorkingSet is { } report
            ? report.PagesUsedWithin(WindowPeriods)
            : (ulong)Math.Ceiling(EsxPolicy.FractionOf(v) * v.AllocationPages);
        return used + Math.Max(MarginPages, (ulong)(used * MarginFraction));
    }
}

/// <summary>Policies by name: the built-in ones (one entry each below), or a user's class named as
/// <c>Namespace.Type, Assembly</c> (an assembly the runtime can load) or <c>path/to/Lib.dll:Namespace.Type</c>
/// (a relative path is relative to the current directory). A policy's traits are its own
/// (<see cref="IAllocationPolicy.Traits"/>); adding a built-in policy is one class and one line here.</summary>
public static class PolicyCatalog
{
    private static readonly (string Name, Func<IAllocationPolicy> Create)[] Entries =
    [
        ("static", () => new StaticPolicy()),
        ("esx", () => new EsxPolicy()),
        ("pagelab", () => new PageLabPolicy()),
        ("mrc", () => new MissCurvePolicy()),
    ];

    /// <summary>The built-in policies' names, in the order comparisons show them.</summary>
    public static readonly string[] BuiltIn = Entries.Select(e => e.Name).ToArray();
    /// <summary>The policy a scenario runs with when it names none.</summary>
    public const string DefaultName = "mrc";
    /// <summary>The static partition's name (what <c>"adaptive": false</c> means).</summary>
    public const string StaticName = "static";

    /// <summary>A built-in policy's traits, or the default traits for a user's class, which is not loaded
    /// here (the scheduler reads the loaded class's own <see cref="IAllocationPolicy.Traits"/>).</summary>
    public static PolicyTraits TraitsOf(string name) =>
        Entries.FirstOrDefault(e => e.Name == name).Create is { } create ? create().Traits : PolicyTraits.Default;

    /// <summary>Checks a policy's name without loading anything (checking a scenario must not run code it
    /// names): a built-in name, or a user's class in one of the two forms, its .dll present.
    /// <see cref="ArgumentException"/> saying why not.</summary>
    public static void CheckName(string name)
    {
        if (BuiltIn.Contains(name)) return;
        if (DllPath(name) is (string path, _))
        {
            if (!File.Exists(path)) throw new ArgumentException($"policy '{name}': no assembly at {path}");
            return;
        }
        if (!name.Contains(','))
            throw new ArgumentException($"policy '{name}' is not one of {string.Join(", ", BuiltIn)}, nor a class named as 'Namespace.Type, Assembly' or 'path/Lib.dll:Namespace.Type'");
    }

    private static (string Path, string Type)? DllPath(string name)
    {
        int colon = name.LastIndexOf(':');
        return colon > 1 && name[..colon].EndsWith(".dll", StringComparison.OrdinalIgnoreCase)
            ? (Path.GetFullPath(name[..colon]), name[(colon + 1)..])
            : null;
    }

    /// <summary>A new instance of the named policy (a user's class is loaded and constructed here);
    /// <see cref="ArgumentException"/> saying why not.</summary>
    public static IAllocationPolicy Create(string name)
    {
        if (Entries.FirstOrDefault(e => e.Name == name).Create is { } builtIn) return builtIn();
        CheckName(name);
        Type? type;
        try
        {
            type = DllPath(name) is (string path, string typeName)
                ? System.Reflection.Assembly.LoadFrom(path).GetType(typeName)
                : Type.GetType(name, throwOnError: false);
        }
        catch (Exception e) when (e is BadImageFormatException or FileLoadException or FileNotFoundException or TypeLoadException)
        {
            throw new ArgumentException($"policy '{name}': cannot be loaded ({e.Message})");
        }
        if (type is null) throw new ArgumentException($"policy '{name}': no such class");
        if (!typeof(IAllocationPolicy).IsAssignableFrom(type))
            throw new ArgumentException($"policy '{name}': {type.FullName} does not implement {nameof(IAllocationPolicy)}");
        if (type.GetConstructor(Type.EmptyTypes) is null)
            throw new ArgumentException($"policy '{name}': {type.FullName} has no public parameterless constructor");
        try
        {
            return (IAllocationPolicy)Activator.CreateInstance(type)!;
        }
        catch (System.Reflection.TargetInvocationException e)
        {
            throw new ArgumentException($"policy '{name}': its constructor failed ({e.InnerException?.Message ?? e.Message})");
        }
    }
}
