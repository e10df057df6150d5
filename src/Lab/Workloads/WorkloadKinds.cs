// The catalog of workload kinds: one registration line per kind. The scenario check, the runner and the docs
// test all read it; adding a kind is its class and one line here.
using System.Text.Json;
using System.Text.Json.Serialization;
using PageLab.Lab.Workloads.Traces;

namespace PageLab.Lab.Workloads;

public static class WorkloadKinds
{
    /// <summary>The kind a workload without <c>"kind"</c> is.</summary>
    public const string DefaultKind = "active";

    private static readonly object Gate = new();
    private static IWorkloadKind[] _kinds =
    [
        new IdleKind(),
        new ActiveKind(),
        new GrowingKind(),
        new BurstKind(),
        new TraceKind(),
        new PhasesKind(),
        new SqliteKind(),
        new FileKind(),
    ];

    /// <summary>Every registered kind, in registration order (the order errors and docs list them in).</summary>
    public static IReadOnlyList<IWorkloadKind> All => Volatile.Read(ref _kinds);

    public static IWorkloadKind? Find(string name) => All.FirstOrDefault(k => k.Name == name);

    /// <summary>Adds a kind (a plug-in's or a test's); a name already taken is refused.</summary>
    public static void Register(IWorkloadKind kind)
    {
        ArgumentNullException.ThrowIfNull(kind);
        lock (Gate)
        {
            if (Find(kind.Name) is not null) throw new ArgumentException($"a workload kind '{kind.Name}' is already registered", nameof(kind));
            Volatile.Write(ref _kinds, [.. _kinds, kind]);
        }
    }

    /// <summary>The error text for a kind nobody registered.</summary>
    public static string Unknown(string name) =>
        $"'{name}' is not a workload kind ({string.Join(", ", All.Select(k => k.Name))})";

    /// <summary>How a kind's keys deserialize: as the scenario's, camelCase, no key the settings record lacks.</summary>
    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    };
}
