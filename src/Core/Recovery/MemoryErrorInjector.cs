// Error injection: corrupts frames through the host view as failing memory would (single bit, several
// bits of one word, a byte range, a whole page) in data, parity or free frames, and reports them.
// Guest pages are poisoned as they are hit, so no access sees the bad bytes before the report.
using PageLab.Core.Guest;
using PageLab.Core.Host;

namespace PageLab.Core.Recovery;

public enum ErrorKind { SingleBit, MultiBit, ByteRange, WholePage }

public static class MemoryErrorInjector
{
    /// <summary>A random error pattern of a kind: (offset in the page, XOR mask), never all zero.</summary>
    public static (int Offset, byte[] Mask) Pattern(ErrorKind kind, int pageSize, Random rng)
    {
        switch (kind)
        {
            case ErrorKind.SingleBit:
                return (rng.Next(pageSize), [(byte)(1 << rng.Next(8))]);
            case ErrorKind.MultiBit:
            {
                // 2..8 bits within one 64-bit word: what ECC reports as uncorrectable.
                var mask = new byte[8];
                int bits = rng.Next(2, 9);
                for (int set = 0; set < bits;)
                {
                    int b = rng.Next(64);
                    if ((mask[b / 8] & (1 << (b % 8))) != 0) continue;
                    mask[b / 8] |= (byte)(1 << (b % 8));
                    set++;
                }
                return (rng.Next(pageSize / 8) * 8, mask);
            }
            case ErrorKind.ByteRange:
            {
                int len = rng.Next(2, 257);
                var mask = new byte[len];
                rng.NextBytes(mask);
                mask[0] |= 1;
                return (rng.Next(pageSize - len + 1), mask);
            }
            default:
            {
                var mask = new byte[pageSize];
                rng.NextBytes(mask);
                mask[0] |= 1;
                return (0, mask);
            }
        }
    }

    /// <summary>Corrupts a guest page's frame and poisons the page. Returns the frame to report, or null
    /// (nothing changed) when the page has no frame at that instant (unbacked or host-swapped), or when
    /// <paramref name="onlyIfProtected"/> is set and the page is not protected at that instant.</summary>
    public static HostFrame? IntoPage(GuestVm vm, GuestPage page, int offset, ReadOnlySpan<byte> mask, bool onlyIfProtected = false)
    {
        CheckMask(vm.Arena, offset, mask);
        // The engine checks the page's state and says which frame it corrupted: by the time we could look
        // again, a guest access may already have had the handler replace it.
        return vm.Inject(page, offset, mask, onlyIfProtected);
    }

    /// <summary>Corrupts a frame no guest maps (a parity or free frame), or a guest frame silently
    /// (no poison, no report: only the scrubber can find it).</summary>
    public static void IntoFrame(HostArena arena, HostFrame frame, int offset, ReadOnlySpan<byte> mask)
    {
        CheckMask(arena, offset, mask);
        Span<byte> bytes = arena.FrameBytes(frame).Slice(offset, mask.Length);
        for (int i = 0; i < mask.Length; i++) bytes[i] ^= mask[i];
    }

    private static void CheckMask(HostArena arena, int offset, ReadOnlySpan<byte> mask)
    {
        if (mask.IsEmpty || mask.IndexOfAnyExcept((byte)0) < 0)
            throw new ArgumentException($"the error mask ({mask.Length} bytes) flips no bit", nameof(mask));
        if (offset < 0 || offset > arena.PageSize - mask.Length)
            throw new ArgumentOutOfRangeException(nameof(offset), offset,
                $"a {mask.Length}-byte error at offset {offset} does not fit a {arena.PageSize}-byte page");
    }
}
