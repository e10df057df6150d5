// Scenario files (JSON): the host, its VMs and their workloads. Loading rejects unknown keys and
// impossible values with the file, key and value named; a built-in default runs when none is given.
using System.Numerics;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using PageLab.Core.Guest;
using PageLab.Lab.Workloads;
using PageLab.Core.Recovery;

namespace PageLab.Lab.Scenarios;

/// <summary>A VM's workload: its kind (one of <see cref="WorkloadKinds"/>) and that kind's keys, kept as JSON until
/// the kind reads them into its settings record. <see cref="Pages"/>, <see cref="EndPages"/>, <see cref="FreeAtTick"/>
/// and <see cref="TouchesPerTick"/> set keys of the synthetic kinds from C#; <see cref="With"/> sets any key.</summary>
[JsonConverter(typeof(WorkloadSpecJsonConverter))]
public sealed record WorkloadSpec
{
    public WorkloadSpec() { }

    // A copy owns its keys: `spec with { Pages = 9 }` must leave spec as it was.
    private WorkloadSpec(WorkloadSpec other)
    {
        Kind = other.Kind;
        Keys = (JsonObject)other.Keys.DeepClone();
    }

    /// <summary>A name in <see cref="WorkloadKinds"/>: idle | active | growing | burst | trace | phases | ...</summary>
    public string Kind { get; init; } = WorkloadKinds.DefaultKind;
    /// <summary>The kind's keys as the file gives them (every key but kind).</summary>
    public JsonObject Keys { get; init; } = new();

    public ulong Pages { init => Keys["pages"] = value; }
    public ulong? EndPages { init => Keys["endPages"] = value; }
    public int? FreeAtTick { init => Keys["freeAtTick"] = value; }
    public int TouchesPerTick { init => Keys["touchesPerTick"] = value; }

    /// <summary>A copy with <paramref name="key"/> set to <paramref name="value"/>.</summary>
    public WorkloadSpec With(string key, JsonNode? value)
    {
        var copy = new WorkloadSpec(this);
        copy.Keys[key] = value;
        return copy;
    }

    /// <summary>The keys as the kind reads them (defaults filled in), or as given when the kind is unknown or
    /// cannot read them.</summary>
    internal IEnumerable<KeyValuePair<string, JsonNode?>> Normalized(JsonSerializerOptions options)
    {
        JsonObject? settings = null;
        if (WorkloadKinds.Find(Kind) is IWorkloadKind kind)
            try { settings = JsonSerializer.SerializeToNode(kind.Settings(this), kind.SettingsType, options) as JsonObject; }
            catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException) { }
        return settings ?? Keys;
    }

    private string Text() => JsonSerializer.Serialize(this, WorkloadKinds.Json);
    public bool Equals(WorkloadSpec? other) => other is not null && Kind == other.Kind && Text() == other.Text();
    public override int GetHashCode() => HashCode.Combine(Kind, Text());
}

/// <summary>A memory error injected into a running scenario at a tick, then reported to the host.</summary>
public sealed record InjectionSpec
{
    public int Tick { get; init; }
    public string Vm { get; init; } = "";
    /// <summary>SingleBit | MultiBit | ByteRange | WholePage</summary>
    public string Kind { get; init; } = "MultiBit";

    /// <summary>True if <paramref name="kind"/> names an error kind exactly (any case): no numbers, no lists,
    /// no spaces, which Enum.TryParse would take.</summary>
    public static bool IsKind(string? kind) =>
        kind is not null && Enum.GetNames<PageLab.Core.Recovery.ErrorKind>().Any(n => string.Equals(n, kind, StringComparison.OrdinalIgnoreCase));

    public static PageLab.Core.Recovery.ErrorKind KindOf(string kind) =>
        IsKind(kind) ? Enum.Parse<PageLab.Core.Recovery.ErrorKind>(kind, ignoreCase: true) : throw new ArgumentException($"'{kind}' is not an error kind", nameof(kind));
    /// <summary>kernel (a parity-protected page of the guest kernel) | user (a page of the VM's workload, unprotected)</summary>
    public string Target { get; init; } = "kernel";
}

public sealed record VmSpec
{
    public string Name { get; init; } = "";
    public ulong Pages { get; init; }
    public int Shares { get; init; } = 1000;
    public ulong MinPages { get; init; }
    public ulong? MaxPages { get; init; }
    /// <summary>Host pages at start (default: the host shared equally).</summary>
    public ulong? InitialPages { get; init; }
    /// <summary>Pages of the guest kernel: a pinned process whose pages parity protects.</summary>
    public ulong KernelPages { get; init; } = 64;
    public WorkloadSpec Workload { get; init; } = new();
    /// <summary>Free page reporting for this VM's guest (opt-in; null: off).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public FreePageReportingSpec? FreePageReporting { get; init; }
    /// <summary>Opts this VM in to content-based page sharing (off by default: copy-on-write timing is a
    /// side channel between tenants, docs/sharing.md). It shares only when the scenario's reclamation has "share".</summary>
    public bool Sharing { get; init; }
    /// <summary>A guest image the VM boots from: read-mostly pages identical in every VM booted from the
    /// image of the same name (null: none).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public ImageSpec? Image { get; init; }
    /// <summary>The guest's vm.swappiness (0..200): how its reclaim weighs anonymous pages against page-cache pages.</summary>
    public int Swappiness { get; init; } = 60;
}

/// <summary>A guest image (kernel text, libraries, page cache of the same files): <see cref="Pages"/> pages
/// whose content depends only on the image's name and the page, loaded at boot, then read and now and then
/// rewritten with the same bytes (every read checked).</summary>
public sealed record ImageSpec
{
    public string Name { get; init; } = "";
    public ulong Pages { get; init; }
    public int ReadsPerTick { get; init; } = 100;
    /// <summary>Writes per tick (each rewrites a page's first word with what it holds: a copy-on-write
    /// fault if the page is shared).</summary>
    public int WritesPerTick { get; init; } = 1;
}

public sealed record FreePageReportingSpec
{
    /// <summary>Ticks a page stays free before the guest reports it.</summary>
    public int DelayTicks { get; init; } = 2;
    /// <summary>Most of the guest's free pages one pass (a tick) reports.</summary>
    public double FractionPerPass { get; init; } = 1.0 / 16;
}

public sealed record Scenario
{
    public string Name { get; init; } = "scenario";
    /// <summary>Host pages the scheduler shares out.</summary>
    public ulong HostPages { get; init; }
    public int Ticks { get; init; } = 300;
    public int SamplePeriodTicks { get; init; } = 10;
    public int BatchPages { get; init; } = 256;
    public double IdleTax { get; init; } = 0.75;
    /// <summary>False keeps the initial allocations: the same as policy "static".</summary>
    public bool Adaptive { get; init; } = true;
    /// <summary>The allocation policy: static | esx | pagelab | mrc, or a user's class (<see cref="PageLab.Core.Scheduling.PolicyCatalog"/>).
    /// Default: mrc, or static when <see cref="Adaptive"/> is false.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Policy { get; init; }
    /// <summary>Lend host pages no VM holds to VMs that page for them (ignored by the static policy).</summary>
    public bool WorkConserving { get; init; } = true;
    /// <summary>How the scheduler takes memory back from a VM over its ceiling, in ESX's order: any of
    /// share, balloon, swap, comma-separated, in that order (<see cref="PageLab.Core.Scheduling.ReclamationParse"/>).</summary>
    public string Reclamation { get; init; } = "balloon";
    /// <summary>Pages the sharing scanner looks at per tick (KSM's pages_to_scan per wake-up: 100).</summary>
    public int ScanPagesPerTick { get; init; } = 100;
    /// <summary>Pages one demand fault maps: its own and the never-used pages of its aligned block of this
    /// many (GuestVm.SetFaultAround). 1 maps only the faulting page.</summary>
    public int FaultAroundPages { get; init; } = 64;
    public int Seed { get; init; } = 1;
    public List<VmSpec> Vms { get; init; } = [];
    public List<InjectionSpec> Injections { get; init; } = [];
    /// <summary>The directory relative file names in the scenario (a trace workload's file) are relative to: the
    /// scenario file's (null: the current directory).</summary>
    [JsonIgnore]
    public string? Directory { get; init; }

    /// <summary>An idle VM that allocated a lot, a VM with a large active working set and a VM whose
    /// demand grows, on a host with half the memory their guests think they have.</summary>
    public static Scenario Default => new()
    {
        Name = "default",
        HostPages = 6144,
        Policy = PageLab.Core.Scheduling.PolicyCatalog.DefaultName,
        Vms =
        [
            new VmSpec { Name = "idle", Pages = 4096, Workload = new WorkloadSpec { Kind = "idle", Pages = 3000, TouchesPerTick = 10 } },
            new VmSpec { Name = "active", Pages = 4096, Workload = new WorkloadSpec { Kind = "active", Pages = 3200 } },
            new VmSpec { Name = "growing", Pages = 4096, Workload = new WorkloadSpec { Kind = "growing", Pages = 400, EndPages = 2600 } },
        ],
        Injections =
        [
            new InjectionSpec { Tick = 100, Vm = "active", Kind = "MultiBit", Target = "kernel" },
            new InjectionSpec { Tick = 150, Vm = "growing", Kind = "WholePage", Target = "kernel" },
            new InjectionSpec { Tick = 200, Vm = "idle", Kind = "ByteRange", Target = "user" },
        ],
    };

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
    };

    /// <summary>Host pages one scenario may share out: 64 GiB of 4 KiB pages, so the arena (host pages plus
    /// demand pools and a step's frames in flight) always has a frame count the host can create.</summary>
    public const ulong MaxHostPages = 1UL << 24;
    /// <summary>Guest physical pages of all VMs together: each guest page costs address space, a page-table
    /// entry in the fault engine and about 24 bytes of guest OS model.</summary>
    public const ulong MaxTotalGuestPages = 1UL << 25;
    public const ulong MinVmPages = 256, MaxVmPages = 1UL << 24;
    public const int MaxVms = 64, MaxBatchPages = 1 << 16, MaxScanPagesPerTick = 1 << 20;
    /// <summary>Touches one workload makes per tick at most (each is a real access of guest memory: 16 M take
    /// about a second).</summary>
    public const int MaxTouchesPerTick = 1 << 24;
    /// <summary>Pages a guest needs beyond its kernel to run at all: the guest OS keeps this many free
    /// (its high watermark), so an allocation below kernel + this leaves the balloon chasing a target the
    /// guest can never reach.</summary>
    public const ulong GuestReservePages = 96;

    /// <summary>Reads and checks a scenario file: malformed JSON, unknown keys, values of the wrong type and
    /// impossible configurations are refused (<see cref="ScenarioException"/>) before anything runs.</summary>
    public static Scenario Load(string path) => Parse(File.ReadAllText(path), path);

    /// <summary>Checks and reads a scenario from JSON <paramref name="text"/>, as <see cref="Load"/> does a file;
    /// <paramref name="path"/> is what its errors name as the source. Relative file names in it (a trace's) are
    /// relative to <paramref name="directory"/>, by default <paramref name="path"/>'s directory when it is a file.</summary>
    public static Scenario Parse(string text, string path, string? directory = null)
    {
        directory ??= File.Exists(path) ? Path.GetDirectoryName(Path.GetFullPath(path)) : null;
        Scenario s;
        try
        {
            ScenarioFileCheck.Check(path, text);
            s = (JsonSerializer.Deserialize<Scenario>(text, Json)
                ?? throw new ScenarioException(path, "$", "the file holds no scenario (null)")) with { Directory = directory };
        }
        catch (JsonException e)
        {
            string key = e.Path is null or "$" ? "$" : e.Path.StartsWith("$.") ? e.Path[2..] : e.Path;
            throw new ScenarioException(path, key, ScenarioFileCheck.Describe(e, text));
        }
        s.Validate(path);
        return s;
    }

    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions(Json) { WriteIndented = true });

    public void Validate(string source = "built-in scenario")
    {
        void Fail(string key, string why) => throw new ScenarioException(source, key, why);
        if (HostPages == 0 || HostPages > MaxHostPages)
            Fail("hostPages", $"must be between 1 and {MaxHostPages} (64 GiB of 4 KiB pages), got {HostPages}");
        if (Ticks < 1) Fail("ticks", $"must be at least 1, got {Ticks}");
        if (SamplePeriodTicks < 1) Fail("samplePeriodTicks", $"must be at least 1, got {SamplePeriodTicks}");
        if (BatchPages is < 1 or > MaxBatchPages) Fail("batchPages", $"must be between 1 and {MaxBatchPages}, got {BatchPages}");
        if (FaultAroundPages is < 1 or > GuestVm.MaxFaultAround || !BitOperations.IsPow2(FaultAroundPages))
            Fail("faultAroundPages", $"must be a power of two from 1 to {GuestVm.MaxFaultAround}, got {FaultAroundPages}");
        if (IdleTax is < 0 or >= 1) Fail("idleTax", $"must be in [0, 1), got {IdleTax}");
        if (!Adaptive && Policy is not null && Policy != PageLab.Core.Scheduling.PolicyCatalog.StaticName) Fail("policy", $"'{Policy}' conflicts with adaptive: false (which means the static policy); give one");
        if (Policy is not null)
            try { PageLab.Core.Scheduling.PolicyCatalog.CheckName(Policy); }
            catch (ArgumentException e) { Fail("policy", e.Message); }
        PageLab.Core.Scheduling.Reclamation order = default;
        try { order = PageLab.Core.Scheduling.ReclamationParse.Parse(Reclamation); }
        catch (ArgumentException e) { Fail("reclamation", e.Message); }
        if (ScanPagesPerTick is < 1 or > MaxScanPagesPerTick)
            Fail("scanPagesPerTick", $"must be between 1 and {MaxScanPagesPerTick}, got {ScanPagesPerTick}");
        if (Vms is null || Vms.Count == 0) Fail("vms", "needs at least one VM");
        if (Vms!.Count > MaxVms) Fail("vms", $"{Vms.Count} VMs, more than the limit of {MaxVms}");
        var names = new HashSet<string>();
        ulong initial = 0;
        for (int i = 0; i < Vms.Count; i++)
        {
            VmSpec v = Vms[i];
            string at = $"vms[{i}]";
            if (string.IsNullOrWhiteSpace(v.Name)) Fail($"{at}.name", "must not be empty");
            if (!names.Add(v.Name)) Fail($"{at}.name", $"'{v.Name}' is used twice");
            if (v.Pages is < MinVmPages or > MaxVmPages) Fail($"{at}.pages", $"must be between {MinVmPages} and {MaxVmPages}, got {v.Pages}");
            if (v.Shares < 1) Fail($"{at}.shares", $"must be at least 1, got {v.Shares}");
            ulong max = v.MaxPages ?? v.Pages;
            if (max > v.Pages) Fail($"{at}.maxPages", $"{max} is more than the VM's {v.Pages} pages");
            if (v.MinPages > max) Fail($"{at}.minPages", $"min {v.MinPages} > max {max}");
            ulong init = InitialOf(v);
            if (init < v.MinPages || init > max) Fail($"{at}.initialPages", $"{init} is outside [{v.MinPages}, {max}]");
            initial += init;
            if (v.Swappiness is < 0 or > 200) Fail($"{at}.swappiness", $"must be between 0 and 200 (Linux vm.swappiness), got {v.Swappiness}");
            if (v.Workload is null) Fail($"{at}.workload", "must not be null");
            ValidateWorkload(v.Workload!, WorkloadContextOf(v), $"{at}.workload", source);
            if (v.FreePageReporting is { } fpr)
            {
                if (fpr.DelayTicks < 0) Fail($"{at}.freePageReporting.delayTicks", $"must not be negative, got {fpr.DelayTicks}");
                if (fpr.FractionPerPass is <= 0 or > 1) Fail($"{at}.freePageReporting.fractionPerPass", $"must be in (0, 1], got {fpr.FractionPerPass}");
            }
            if (v.Image is { } img)
            {
                if (string.IsNullOrWhiteSpace(img.Name)) Fail($"{at}.image.name", "must not be empty");
                if (img.Pages == 0 || img.Pages > v.Pages / 2) Fail($"{at}.image.pages", $"must be between 1 and half the VM's pages ({v.Pages / 2}), got {img.Pages}");
                if (img.ReadsPerTick < 0) Fail($"{at}.image.readsPerTick", $"must not be negative, got {img.ReadsPerTick}");
                if (img.WritesPerTick < 0) Fail($"{at}.image.writesPerTick", $"must not be negative, got {img.WritesPerTick}");
            }
        }
        if (order.HasFlag(PageLab.Core.Scheduling.Reclamation.Share) && !Vms.Any(v => v.Sharing))
            Fail("reclamation", $"'{Reclamation}' shares, but no VM opted in; give a VM \"sharing\": true (sharing is per VM: copy-on-write timing is a side channel)");
        ulong guestPages = Vms.Aggregate(0UL, (s, v) => s + v.Pages);
        if (guestPages > MaxTotalGuestPages)
            Fail("vms[*].pages", $"the VMs' guest physical memory totals {guestPages} pages, more than the limit of {MaxTotalGuestPages} (128 GiB of 4 KiB pages)");
        for (int i = 0; i < Vms.Count; i++)
            if (Vms[i].KernelPages is var k && (k < 2 || k > Vms[i].Pages / 4))
                Fail($"vms[{i}].kernelPages", $"must be between 2 and a quarter of the VM's pages ({Vms[i].Pages / 4}), got {k}");
        // Every VM must be able to hold its kernel (pinned) and the guest OS's free reserve.
        ulong floors = Vms.Aggregate(0UL, (n, v) => n + FloorOf(v));
        if (floors > HostPages)
            Fail("hostPages", $"{HostPages} cannot hold the VMs' kernels (pinned) and the guest OS's {GuestReservePages} free pages each: at least {floors}");
        for (int i = 0; i < Vms.Count; i++)
        {
            VmSpec v = Vms[i];
            string why = $"cannot hold the VM's kernel ({v.KernelPages} pages, pinned) and the guest OS's {GuestReservePages} free pages: at least {FloorOf(v)}";
            if ((v.MaxPages ?? v.Pages) < FloorOf(v)) Fail($"vms[{i}].maxPages", $"{v.MaxPages} {why}");
            if (InitialOf(v) < FloorOf(v))
                Fail($"vms[{i}].initialPages", $"{InitialOf(v)}{(v.InitialPages is null ? $" (hostPages / {Vms.Count} VMs)" : "")} {why}");
        }
        for (int i = 0; i < (Injections?.Count ?? 0); i++)
        {
            InjectionSpec j = Injections![i];
            string at = $"injections[{i}]";
            if (j.Tick < 1 || j.Tick > Ticks) Fail($"{at}.tick", $"must be between 1 and ticks ({Ticks}), got {j.Tick}");
            if (!Vms.Any(v => v.Name == j.Vm)) Fail($"{at}.vm", $"'{j.Vm}' is not one of the VMs ({string.Join(", ", Vms.Select(v => v.Name))})");
            if (!InjectionSpec.IsKind(j.Kind))
                Fail($"{at}.kind", $"'{j.Kind}' is not one of {string.Join(", ", Enum.GetNames<PageLab.Core.Recovery.ErrorKind>())}");
            if (j.Target is not ("kernel" or "user")) Fail($"{at}.target", $"'{j.Target}' is not kernel or user");
        }
        ulong mins = Vms.Aggregate(0UL, (s, v) => s + v.MinPages);
        if (mins > HostPages) Fail("vms[*].minPages", $"the VMs' minimums total {mins} pages, more than hostPages {HostPages}");
        if (initial > HostPages) Fail("vms[*].initialPages", $"initial allocations total {initial} pages, more than hostPages {HostPages}");
    }

    /// <summary>What VM <paramref name="v"/>'s workload kind may know of this scenario (the runner adds where the
    /// run keeps its temporary files).</summary>
    internal WorkloadContext WorkloadContextOf(VmSpec v, string? tempDirectory = null) =>
        new(v.Pages, Ticks, SamplePeriodTicks, Directory)
        {
            KernelPages = v.KernelPages,
            ImagePages = v.Image?.Pages ?? 0,
            VmsOfThisKind = Vms.Count(x => x.Workload?.Kind == v.Workload?.Kind),
            TempDirectory = tempDirectory,
        };

    // The kind checks its own keys; its errors get the workload's path in front.
    private static void ValidateWorkload(WorkloadSpec w, WorkloadContext context, string at, string source)
    {
        IWorkloadKind kind = WorkloadKinds.Find(w.Kind) ?? throw new ScenarioException(source, $"{at}.kind", WorkloadKinds.Unknown(w.Kind));
        try { kind.Validate(w, context); }
        catch (WorkloadSpecException e) { throw new ScenarioException(source, $"{at}.{e.Key}", e.Why); }
        catch (JsonException e) { throw new ScenarioException(source, at, e.Message); }
    }

    /// <summary>The policy this scenario runs with.</summary>
    [JsonIgnore]
    public string PolicyName => Policy ?? (Adaptive ? PageLab.Core.Scheduling.PolicyCatalog.DefaultName : PageLab.Core.Scheduling.PolicyCatalog.StaticName);

    /// <summary>The least allocation a VM can run in: its kernel (pinned) and the guest OS's free reserve.</summary>
    public static ulong FloorOf(VmSpec v) => v.KernelPages + GuestReservePages;

    public ulong InitialOf(VmSpec v) =>
        v.InitialPages ?? Math.Clamp(HostPages / (ulong)Vms.Count, v.MinPages, v.MaxPages ?? v.Pages);
}

public sealed class ScenarioException(string source, string key, string why)
    : Exception($"{source}: {key}: {why}")
{
    public string Origin { get; } = source;
    public string Key { get; } = key;
}
