// The predetermined value a balloon application writes into each page it reserves, and its check.
// The value is a 32-byte header naming the VM, virtual page and sequence number, with a check word, at
// the start of the page. It identifies the page; it does not make the rest of the page safe to hand on,
// so the hypervisor zeroes every frame it takes whatever the guest left in it. Filling or verifying the
// whole page as well would add a pass over every page moved (measured: a full-page check costs more
// than the zeroing it would let the host skip), for no gain in what reaches the target.
// The shareable form (a VM that opted in to page sharing): the whole page is one 64-bit word repeated, the
// same for every page of the VM, so the sharing scanner collapses the VM's balloon pages onto one shared
// frame per value (US8826278). It carries no page, sequence or check: the host binds a report to its page
// by the guest's page table (translation), never by the value, so nothing is lost (docs/sharing.md).
using System.Buffers.Binary;
using System.Runtime.InteropServices;

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

    /// <summary>The shareable value of a VM: one word, the same in every balloon page of the VM.</summary>
    public static ulong SharedWord(int vmId)
    {
        ulong x = Magic ^ (ulong)(uint)vmId * 0x9E3779B97F4A7C15;
        x ^= x >> 33; x *= 0xff51afd7ed558ccd;
        return (x ^ (x >> 33)) | 1; // never 0: a balloon page must not pass for a zero page
    }

    /// <summary>Fills the whole page with the VM's shareable value.</summary>
    public static void WriteShared(Span<byte> page, int vmId) => MemoryMarshal.Cast<byte, ulong>(page).Fill(SharedWord(vmId));

    /// <summary>True if the whole page holds the VM's shareable value (every word checked: a page that passes
    /// is exactly what the scanner's uniform frame of that value holds).</summary>
    public static bool MatchesShared(ReadOnlySpan<byte> page, int vmId) =>
        MemoryMarshal.Cast<byte, ulong>(page).IndexOfAnyExcept(SharedWord(vmId)) < 0;

    private static ulong Check(int vmId, ulong vpn, uint seq)
    {
        ulong x = Magic ^ ((ulong)(uint)vmId << 32 | seq) ^ (vpn * 0x9E3779B97F4A7C15);
        x ^= x >> 33; x *= 0xff51afd7ed558ccd;
        x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53;
        return x ^ (x >> 33);
    }
}
