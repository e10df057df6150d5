// The predetermined value a balloon application writes into each page it reserves, and its check.
// The value is a 32-byte header naming the VM, virtual page and sequence number, with a check word, at
// the start of the page. It identifies the page; it does not make the rest of the page safe to hand on,
// so the hypervisor zeroes every frame it takes whatever the guest left in it. Filling or verifying the
// whole page as well would add a pass over every page moved (measured: a full-page check costs more
// than the zeroing it would let the host skip), for no gain in what reaches the target.
using System.Buffers.Binary;

namespace PageLab.Core.Balloon;

public static class BalloonTag
{
    public const ulong Magic = 0x4E4F4F4C4C414250; // "PBALLOON" little-endian
    public const int HeaderBytes = 32;

    /// <summary>Writes the value for (vm, vpn, seq) at the start of the page.</summary>
    public static void Write(Span<byte> page, int vmId, ulong vpn, uint seq)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(page, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(page[8..], vmId);
        BinaryPrimitives.WriteUInt32LittleEndian(page[12..], seq);
        BinaryPrimitives.WriteUInt64LittleEndian(page[16..], vpn);
        BinaryPrimitives.WriteUInt64LittleEndian(page[24..], Check(vmId, vpn, seq));
    }

    /// <summary>True if the page holds the value for (vm, vpn, seq).</summary>
    public static bool Matches(ReadOnlySpan<byte> page, int vmId, ulong vpn, uint seq) =>
        TryRead(page, out int v, out ulong p, out uint s) && v == vmId && p == vpn && s == seq;

    /// <summary>Reads a value whose magic and check word are right.</summary>
    public static bool TryRead(ReadOnlySpan<byte> page, out int vmId, out ulong vpn, out uint seq)
    {
        vmId = BinaryPrimitives.ReadInt32LittleEndian(page[8..]);
        seq = BinaryPrimitives.ReadUInt32LittleEndian(page[12..]);
        vpn = BinaryPrimitives.ReadUInt64LittleEndian(page[16..]);
        return BinaryPrimitives.ReadUInt64LittleEndian(page) == Magic
            && BinaryPrimitives.ReadUInt64LittleEndian(page[24..]) == Check(vmId, vpn, seq);
    }

    private static ulong Check(int vmId, ulong vpn, uint seq)
    {
        ulong x = Magic ^ ((ulong)(uint)vmId << 32 | seq) ^ (vpn * 0x9E3779B97F4A7C15);
        x ^= x >> 33; x *= 0xff51afd7ed558ccd;
        x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53;
        return x ^ (x >> 33);
    }
}
