// The workload seam: what a guest runs (IWorkload) and the kinds a scenario names (IWorkloadKind). A kind
// owns its JSON keys, their checks and how it builds its workload; WorkloadKinds lists them, one line each.
using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using System.Text.Json.Nodes;
using PageLab.Core.Condition;
using PageLab.Core.GuestOs;
using PageLab.Lab.Observation;
using PageLab.Lab.Scenarios;

namespace PageLab.Lab.Workloads;

/// <summary>What one guest process does, tick by tick. Every access ends in a real load or store on guest memory.</summary>
public interface IWorkload
{
    GuestProcess Process { get; }
    /// <summary>Pages the workload wants to use now (its true working set).</summary>
    ulong WorkingSetPages(int tick);
    void Step(int tick, Random rng);
}

/// <summary>A workload that is an application: it answers the memory condition itself, reports its own totals
/// (<c>app</c> in the run summary) and may keep unprotected errors out of its memory. The runner treats every such
/// workload alike, whatever its kind.</summary>
public interface IApplicationWorkload : IWorkload
{
    /// <summary>Gives it both readings of its VM's memory condition: the guest OS's own (from its free memory,
    /// given the last level) and the hypervisor's (the condition hypercall), with the thresholds their levels
    /// follow; it follows the one it is set to.</summary>
    void FollowCondition(LevelThresholds thresholds, Func<MemoryLevel, MemoryConditionReport> guestOs, Func<MemoryConditionReport> hypervisor);
    /// <summary>What it did so far.</summary>
    AppTotals Totals();
    /// <summary>Why an unprotected error (contained by zeroing the page) is not injected into its pages; null: it may be.</summary>
    string? RefusesUnprotectedErrors { get; }
}

/// <summary>What a kind may know of the scenario around its workload, when it checks its keys and when it
/// builds its workload.</summary>
/// <param name="VmPages">The VM's guest physical pages (the workload's process has this many virtual pages).</param>
/// <param name="Ticks">The run's length.</param>
/// <param name="SamplePeriodTicks">Ticks per working-set sampling period.</param>
/// <param name="Directory">What a relative file name in the workload's keys is relative to: the scenario file's
/// directory (null: the current directory).</param>
public sealed record WorkloadContext(ulong VmPages, int Ticks, int SamplePeriodTicks, string? Directory = null)
{
    /// <summary>The VM's kernel pages (pinned; no workload can have them).</summary>
    public ulong KernelPages { get; init; }
    /// <summary>The VM's image pages (its page cache; no workload can have them).</summary>
    public ulong ImagePages { get; init; }
    /// <summary>How many of the scenario's VMs run this kind (a kind whose state is process-wide allows one).</summary>
    public int VmsOfThisKind { get; init; } = 1;
    /// <summary>Where the run keeps its temporary files (swap files, an application's database); null: the system's.</summary>
    public string? TempDirectory { get; init; }


    /// <summary>A file name from the workload's keys as a full path.</summary>
    public string PathOf(string file) => Path.GetFullPath(Path.Combine(Directory ?? Environment.CurrentDirectory, file));
}

/// <summary>A workload kind: its name in a scenario's <c>"kind"</c>, the JSON keys it accepts (the public settable
/// properties of <see cref="SettingsType"/>, camelCase), their checks, and the workload it builds.</summary>
public interface IWorkloadKind
{
    string Name { get; }
    /// <summary>The record its keys deserialize to; the file check knows the keys and their types from it.</summary>
    Type SettingsType { get; }
    /// <summary>Keys a file must give, with what they accept (named in the "required, but missing" error).</summary>
    IReadOnlyList<(string Key, string Accepts)> Required { get; }
    /// <summary>The spec's keys as the kind's settings record, every default filled in.</summary>
    object Settings(WorkloadSpec spec);
    /// <summary>Throws <see cref="WorkloadSpecException"/> naming the first bad key (relative to the workload) and its value.</summary>
    void Validate(WorkloadSpec spec, WorkloadContext context);
    IWorkload Create(WorkloadSpec spec, GuestProcess process, WorkloadContext context);
    /// <summary>Starts the workload in <paramref name="os"/> (what the runner calls): the process it runs in, then
    /// <see cref="Create"/>.</summary>
    IWorkload Start(WorkloadSpec spec, GuestOperatingSystem os, WorkloadContext context);
}

/// <summary>A bad value in a workload's keys: <see cref="Key"/> is relative to the workload (<c>pages</c>,
/// <c>phases[1].ticks</c>); the scenario check puts the VM's path in front.</summary>
public sealed class WorkloadSpecException(string key, string why) : Exception($"{key}: {why}")
{
    public string Key { get; } = key;
    public string Why { get; } = why;
}

/// <summary>The usual way to write a kind: a settings record <typeparamref name="TSettings"/> (its properties
/// are the keys, their initial values the defaults), a check and a factory over it.</summary>
public abstract class WorkloadKind<TSettings> : IWorkloadKind where TSettings : class, new()
{
    public abstract string Name { get; }
    public Type SettingsType => typeof(TSettings);
    public virtual IReadOnlyList<(string Key, string Accepts)> Required => [];

    protected abstract void Validate(TSettings settings, WorkloadContext context);
    protected abstract IWorkload Create(TSettings settings, GuestProcess process, WorkloadContext context);

    /// <summary>Its process: by default one named after the kind with as many virtual pages as the VM, handed to
    /// <see cref="Create(TSettings, GuestProcess, WorkloadContext)"/>. A kind whose process the guest makes another
    /// way (an application's pinned run of guest pages) overrides this.</summary>
    protected virtual IWorkload Start(TSettings settings, GuestOperatingSystem os, WorkloadContext context) =>
        Create(settings, os.Spawn(Name, os.Vm.PageCount), context);

    public TSettings SettingsOf(WorkloadSpec spec) =>
        spec.Keys.Deserialize<TSettings>(WorkloadKinds.Json) ?? new TSettings();

    object IWorkloadKind.Settings(WorkloadSpec spec) => SettingsOf(spec);
    void IWorkloadKind.Validate(WorkloadSpec spec, WorkloadContext context) => Validate(SettingsOf(spec), context);
    IWorkload IWorkloadKind.Create(WorkloadSpec spec, GuestProcess process, WorkloadContext context) =>
        Create(SettingsOf(spec), process, context);
    IWorkload IWorkloadKind.Start(WorkloadSpec spec, GuestOperatingSystem os, WorkloadContext context) =>
        Start(SettingsOf(spec), os, context);

    /// <summary>Refuses <paramref name="key"/> (relative to the workload) with <paramref name="why"/>, which names the value.</summary>
    [DoesNotReturn]
    protected static void Fail(string key, string why) => throw new WorkloadSpecException(key, why);
}

/// <summary>Reads and writes a <see cref="WorkloadSpec"/>: <c>kind</c> first, then the kind's keys. A known kind
/// writes its settings record (every default filled in, as a run's trace records them); an unknown kind writes
/// its keys as given.</summary>
public sealed class WorkloadSpecJsonConverter : System.Text.Json.Serialization.JsonConverter<WorkloadSpec>
{
    public override WorkloadSpec Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        JsonObject keys = JsonSerializer.Deserialize<JsonObject>(ref reader, options)
                          ?? throw new JsonException("a workload must be an object");
        string kind = WorkloadKinds.DefaultKind;
        if (keys["kind"] is JsonNode k)
        {
            kind = k.GetValueKind() == JsonValueKind.String ? k.GetValue<string>() : throw new JsonException("a workload's kind must be a string");
            keys.Remove("kind");
        }
        return new WorkloadSpec { Kind = kind, Keys = keys };
    }

    public override void Write(Utf8JsonWriter writer, WorkloadSpec value, JsonSerializerOptions options)
    {
        writer.WriteStartObject();
        writer.WriteString("kind", value.Kind);
        foreach ((string key, JsonNode? node) in value.Normalized(options))
        {
            writer.WritePropertyName(key);
            if (node is null) writer.WriteNullValue();
            else node.WriteTo(writer, options);
        }
        writer.WriteEndObject();
    }
}
