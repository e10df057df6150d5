// Which protection a page gets, by category, per VM (user-definable). Defaults follow the seed:
// kernel-like and read-mostly pages get parity, clean pages with a disk copy get their disk location.
namespace PageLab.Core.Recovery;

public enum PageCategory { KernelLike, ReadMostly, CleanWithDiskCopy, Other }

public enum Protection { None, Parity, DiskCopy }

public sealed record ProtectionPolicy
{
    public Protection KernelLike { get; init; } = Protection.Parity;
    public Protection ReadMostly { get; init; } = Protection.Parity;
    public Protection CleanWithDiskCopy { get; init; } = Protection.DiskCopy;
    public Protection Other { get; init; } = Protection.None;
    /// <summary>Pages per parity group (k), 2..32.</summary>
    public int GroupSize { get; init; } = 8;

    public Protection For(PageCategory c) => c switch
    {
        PageCategory.KernelLike => KernelLike,
        PageCategory.ReadMostly => ReadMostly,
        PageCategory.CleanWithDiskCopy => CleanWithDiskCopy,
        _ => Other,
    };

    public void Validate()
    {
        if (GroupSize is < 2 or > 32) throw new ArgumentOutOfRangeException(nameof(GroupSize), GroupSize, "parity groups have 2..32 pages");
    }
}
