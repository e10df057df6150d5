// The predetermined value a balloon application writes into each page it reserves, and its check.
// A tagged page names its VM, virtual page and sequence number, and the rest of the page is a fill
// derived from them, so a page is recognised only if every byte is as agreed.
using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace PageLab.Core.Balloon;

public static class BalloonTag
{
    public const ulong Magic = 0x4E4F4F4C4C414250; // "PBALLOON" little-endian
    public const int HeaderBytes = 32;

    /// <summary>Writes the value for (vm, vpn, seq) over the whole page.</summary>
    public static void Write(Span<byte> page, int vmId, ulong vpn, uint seq)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(page, Magic);
        BinaryPrimitives.WriteInt32LittleEndian(page[8..], vmId);
        BinaryPrimitives.WriteUInt32LittleEndian(page[12..], seq);
        BinaryPrimitives.WriteUInt64LittleEndian(page[16..], vpn);
        BinaryPrimitives.WriteUInt64LittleEndian(page[24..], Check(vmId, vpn, seq));
        MemoryMarshal.Cast<byte, ulong>(page[HeaderBytes..]).Fill(Fill(vmId, vpn, seq));
    }

    /// <summary>True if every byte of the page is the value for (vm, vpn, seq).</summary>
    public static bool Matches(ReadOnlySpan<byte> page, int vmId, ulong vpn, uint seq)
    {
        if (!TryRead(page, out int v, out ulong p, out uint s) || v != vmId || p != vpn || s != seq) return false;
        ulong fill = Fill(vmId, vpn, seq);
        foreach (ulong word in MemoryMarshal.Cast<byte, ulong>(page[HeaderBytes..]))
            if (word != fill) return false;
        return true;
    }

    /// <summary>Reads a header whose magic and check are right (the fill is not checked here).</summary>
    public static bool TryRead(ReadOnlySpan<byte> page, out int vmId, out ulong vpn, out uint seq)
    {
        vmId = BinaryPrimitives.ReadInt32LittleEndian(page[8..]);
        seq = BinaryPrimitives.ReadUInt32LittleEndian(page[12..]);
        vpn = BinaryPrimitives.ReadUInt64LittleEndian(page[16..]);
        return BinaryPrimitives.ReadUInt64LittleEndian(page) == Magic
            && BinaryPrimitives.ReadUInt64LittleEndian(page[24..]) == Check(vmId, vpn, seq);
    }

    private static ulong Check(int vmId, ulong vpn, uint seq) => Mix(Magic ^ ((ulong)(uint)vmId << 32 | seq) ^ (vpn * 0x9E3779B97F4A7C15));
    private static ulong Fill(int vmId, ulong vpn, uint seq) => Mix(Check(vmId, vpn, seq) + 1);

    private static ulong Mix(ulong x)
    {
        x ^= x >> 33; x *= 0xff51afd7ed558ccd;
        x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53;
        return x ^ (x >> 33);
    }
}
