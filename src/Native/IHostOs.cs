// The OS-neutral boundary Core stands on: an arena of host physical memory, its host view,
// returning frames to the OS, and what the machine offers. One implementation per OS.
namespace PageLab.Native;

/// <summary>An arena of host physical memory owned by the OS object behind <see cref="Handle"/>.</summary>
/// <remarks>
/// <see cref="HostView"/> is a read-write mapping of the whole arena. Anyone holding it can alias any
/// frame; it stays valid until <see cref="Dispose"/>, which the arena's single owner calls last.
/// </remarks>
public interface IOsArena : IDisposable
{
    /// <summary>The fd (Linux) or section handle (Windows) the fault engine maps guest views from.</summary>
    nint Handle { get; }
    long Bytes { get; }
    nint HostView { get; }

    /// <summary>Give the pages of [offset, offset+length) back to the OS; they read as zero afterwards.</summary>
    void Discard(long offset, long length);
}

public sealed record HostSystemInfo(
    string Os,
    string Kernel,
    int PageSize,
    long? MaxMapCount,
    long CurrentMappings,
    string Userfaultfd);

public interface IHostOs
{
    int PageSize { get; }

    /// <summary>A sealed, zero-filled arena of <paramref name="bytes"/> bytes.</summary>
    IOsArena CreateArena(long bytes, string name);

    /// <summary>Resident set size of this process, in bytes.</summary>
    long ResidentBytes();

    HostSystemInfo Describe();

    /// <summary>The implementation for the OS this process runs on.</summary>
    public static IHostOs Current { get; } = OperatingSystem.IsLinux() ? new LinuxHostOs()
        : OperatingSystem.IsWindows() ? new WindowsHostOs()
        : new UnsupportedHostOs();
}

internal sealed class UnsupportedHostOs : IHostOs
{
    private static PlatformNotSupportedException NotHere() => new(
        $"PageLab has no host backend for {System.Runtime.InteropServices.RuntimeInformation.OSDescription}; it runs on Linux and Windows.");

    public int PageSize => Environment.SystemPageSize;
    public IOsArena CreateArena(long bytes, string name) => throw NotHere();
    public long ResidentBytes() => throw NotHere();
    public HostSystemInfo Describe() => throw NotHere();
}
