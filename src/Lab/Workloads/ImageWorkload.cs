// A guest image's pages read and rewritten by a guest process: the same bytes in every VM booted from one
// image (what page sharing finds), every read checked against the image.
using System.IO.Hashing;
using System.Runtime.InteropServices;
using PageLab.Core.GuestOs;
using PageLab.Lab.Scenarios;

namespace PageLab.Lab.Workloads;

/// <summary>A guest image's pages (<see cref="ImageSpec"/>): written at boot with bytes that depend only on the
/// image's name and the page, so every VM booted from one image holds the same pages; then each tick reads
/// random pages (every read checked against the image) and rewrites a few with the bytes they hold (a
/// write to a shared page is a copy-on-write fault; the content stays the image's).</summary>
public sealed class ImageWorkload
{
    private readonly GuestProcess _process;
    private readonly ImageSpec _spec;
    private readonly ulong _seed;

    public ImageWorkload(GuestOperatingSystem os, ImageSpec spec)
    {
        _spec = spec;
        _seed = XxHash3.HashToUInt64(System.Text.Encoding.UTF8.GetBytes(spec.Name));
        _process = os.Spawn("image", spec.Pages);
        for (ulong v = 0; v < spec.Pages; v++)
        {
            Span<ulong> w = MemoryMarshal.Cast<byte, ulong>(_process.Page(v));
            for (int k = 0; k < w.Length; k++) w[k] = Word(v, k);
        }
    }

    public GuestProcess Process => _process;
    /// <summary>Reads that saw anything but the image's bytes (must stay 0: sharing, copy-on-write, guest
    /// and host paging all keep a page's content).</summary>
    public long WrongReads { get; private set; }
    public long Reads { get; private set; }
    public long Writes { get; private set; }

    // Distinct in every word of every page (never a uniform page), the same in every VM of the image.
    private ulong Word(ulong vpn, int k) => _seed ^ (vpn << 16 | (uint)k) * 0x9E3779B97F4A7C15UL;

    public void Step(Random rng)
    {
        if (_process.Killed) return;
        try
        {
            for (int i = 0; i < _spec.ReadsPerTick; i++)
            {
                ulong vpn = (ulong)rng.NextInt64((long)_spec.Pages);
                ReadOnlySpan<ulong> w = MemoryMarshal.Cast<byte, ulong>(_process.Page(vpn));
                int k = rng.Next(w.Length);
                Reads++;
                if (w[k] != Word(vpn, k) || w[0] != Word(vpn, 0)) WrongReads++;
            }
            for (int i = 0; i < _spec.WritesPerTick; i++)
            {
                ulong vpn = (ulong)rng.NextInt64((long)_spec.Pages);
                MemoryMarshal.Cast<byte, ulong>(_process.Page(vpn))[0] = Word(vpn, 0);
                Writes++;
            }
        }
        catch (GuestProcessKilledException) { }
    }
}
