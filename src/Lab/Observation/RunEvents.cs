// What happens in a run, as events: the scenario, scheduler decisions, balloon steps, frames moving
// between VMs, condition changes, and (reported by other layers) injected errors and recoveries.
using System.Text.Json;
using System.Text.Json.Serialization;
using PageLab.Core.Condition;
using PageLab.Lab.Scenarios;

namespace PageLab.Lab.Observation;

/// <summary>The kinds of <see cref="RunEvent"/>; the trace writes them in snake_case.</summary>
public enum RunEventKind
{
    /// <summary>Tick 0, first event: the scenario as run (with its seed), enough to run it again.</summary>
    Run,
    /// <summary>End of a sampling period: one VM's new allocation, balloon target and working-set estimate.</summary>
    Decision,
    /// <summary>A VM's balloon took <c>frames</c> guest pages (their frames went to the host).</summary>
    Inflate,
    /// <summary>A VM's balloon gave back <c>frames</c> guest pages, each backed by a host frame.</summary>
    Deflate,
    /// <summary><c>frames</c> frames reclaimed from VM <c>from</c> were mapped into VM <c>to</c>.</summary>
    Transfer,
    /// <summary><c>frames</c> free arena frames were mapped into VM <c>to</c>.</summary>
    Grant,
    /// <summary><c>frames</c> frames reclaimed from VM <c>from</c> went back to the free arena.</summary>
    Return,
    /// <summary>A VM's memory condition level changed to <c>level</c>.</summary>
    Condition,
    /// <summary>An error was injected into a VM's memory (reported through <see cref="ScenarioRunner.Record"/>).</summary>
    Injection,
    /// <summary>A VM's memory recovered from an error (reported through <see cref="ScenarioRunner.Record"/>).</summary>
    Recovery,
    /// <summary>Last event: the run reached its last tick.</summary>
    End,
    /// <summary>Page sharing in VM <c>vm</c> since its last such event: <c>frames</c> pages merged onto shared
    /// frames, <c>cowBreaks</c> writes that broke a sharing, <c>sharedPages</c> its pages shared now,
    /// <c>savedFrames</c> its part of the frames sharing saves (its balloon target leaves them out). The
    /// first events of a tick's step: sharing comes first.</summary>
    Share,
    /// <summary>The host swapped out <c>frames</c> pages of VM <c>vm</c>, still over its ceiling after sharing
    /// and its balloon (reclamation's last resort, ESX's order).</summary>
    HostSwap,
    /// <summary>Last event of a run stopped early, at a tick boundary (e.g. by Ctrl-C): <c>frames</c> moved
    /// between VMs so far; <c>detail</c> says why (e.g. "SIGINT").</summary>
    Interrupted,
    /// <summary>A VM's figures of the measurement record that go to the trace (<see cref="VmMeasure.Trace"/>:
    /// counts the seed decides) at the end of a tick, in <c>figures</c>; only for a VM that has one of them
    /// (today: its application's). After the tick's condition events, before its end.</summary>
    Sample,
}

/// <summary>One thing that happened at a tick. Which fields are set depends on <see cref="Kind"/>;
/// unset fields are null and left out of the trace. No wall-clock times: a seeded run's events are
/// the same, in the same order, every time.</summary>
public sealed record RunEvent
{
    public required int Tick { get; init; }
    public required RunEventKind Kind { get; init; }
    public string? Vm { get; init; }
    public string? From { get; init; }
    public string? To { get; init; }
    public long? Frames { get; init; }
    public ulong? AllocationPages { get; init; }
    public ulong? BalloonTargetPages { get; init; }
    public ulong? BalloonActualPages { get; init; }
    public ulong? ActiveEstimatePages { get; init; }
    public MemoryLevel? Level { get; init; }
    /// <summary>Balloon reports the host refused in this step (a misbehaving or unlucky balloon).</summary>
    public int? Refused { get; init; }
    /// <summary>On <see cref="RunEventKind.Share"/>: copy-on-write breaks since the VM's last share event.</summary>
    public long? CowBreaks { get; init; }
    /// <summary>On <see cref="RunEventKind.Share"/>: the VM's pages mapping a shared frame now.</summary>
    public long? SharedPages { get; init; }
    /// <summary>On <see cref="RunEventKind.Share"/>: the VM's part of the frames sharing saves now.</summary>
    public long? SavedFrames { get; init; }
    /// <summary>Free text from the layer that reported the event (e.g. what was injected, how it recovered).</summary>
    public string? Detail { get; init; }
    /// <summary>On <see cref="RunEventKind.Injection"/>: true when the injection hit nothing (no resident page
    /// to hit, e.g. its process was ended): in the trace, but not counted as an injection.</summary>
    public bool? Missed { get; init; }
    /// <summary>On <see cref="RunEventKind.Sample"/>: figure name → value (the order of <see cref="VmMeasures.All"/>).</summary>
    public Dictionary<string, long>? Figures { get; init; }
    /// <summary>On <see cref="RunEventKind.Run"/>: the scenario, so a trace says how to run it again.</summary>
    public Scenario? Scenario { get; init; }

    /// <summary>Events drawn as markers on a timeline (the rest are visible in its series).</summary>
    [JsonIgnore]
    public bool IsMarker => Kind is RunEventKind.Recovery || (Kind is RunEventKind.Injection && Missed != true);

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>This event as one line of JSON, e.g. {"tick":12,"kind":"transfer","from":"idle","to":"active","frames":128}.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    public static RunEvent FromJson(string line) =>
        JsonSerializer.Deserialize<RunEvent>(line, Json) ?? throw new JsonException($"'{line}' holds no event");
}
