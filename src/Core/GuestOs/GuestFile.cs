// A file on the guest's virtual disk: a run of disk pages (its page p's disk location is its offset there), and
// the readahead state the page cache keeps for it.
namespace PageLab.Core.GuestOs;

/// <summary>A file on the guest's virtual disk: <see cref="Pages"/> pages from disk page <see cref="FirstDiskPage"/>
/// (the disk location of its page p is (FirstDiskPage + p) * page size). Also its readahead state.</summary>
public sealed class GuestFile
{
    internal GuestFile(int id, string name, long firstDiskPage, long pages) => (Id, Name, FirstDiskPage, Pages) = (id, name, firstDiskPage, pages);

    public int Id { get; }
    public string Name { get; }
    public long FirstDiskPage { get; }
    public long Pages { get; }
    /// <summary>The readahead window the last read used (pages; 0 before the first read).</summary>
    public int ReadaheadWindowPages { get; internal set; }
    /// <summary>Every read from the disk so far, in pages, in order (the first 4,096): how readahead's window moved.</summary>
    public IReadOnlyList<int> Reads => _reads;
    internal readonly List<int> _reads = new();
    internal long NextExpected = -1;     // the page after the last window read: a miss there is sequential
    internal long LastPage = -1;         // the page read last
    internal bool ReadAheadDue;          // the last access hit the readahead marker
}
