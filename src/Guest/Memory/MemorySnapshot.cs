namespace LiveMigration.Guest.Memory;

/// <summary>
/// A copy-on-write view of guest RAM at the moment it was taken. The guest keeps running: a page is
/// copied aside only on its first write after the snapshot, so taking one costs O(pages) flags, not
/// a copy of memory. Safe to read from another thread while the guest runs.
/// </summary>
public sealed class MemorySnapshot : IDisposable
{
    private readonly GuestMemory _memory;
    internal readonly byte[]?[] Preserved;
    internal readonly bool[] Touched;

    internal MemorySnapshot(GuestMemory memory, bool[] touched)
    {
        _memory = memory;
        Preserved = new byte[memory.PageCount][];
        Touched = touched;
    }

    public int PageCount => _memory.PageCount;

    /// <summary>True when the page was all zeros at snapshot time (cheap for never-written pages).</summary>
    public bool IsZeroPage(int page)
    {
        if (!Touched[page]) return true;
        Span<byte> buffer = stackalloc byte[GuestMemory.PageSize];
        ReadPage(page, buffer);
        return !buffer.ContainsAnyExcept((byte)0);
    }

    /// <summary>Copies the page as it was at snapshot time.</summary>
    public void ReadPage(int page, Span<byte> destination)
    {
        lock (_memory.SnapshotLock)
        {
            var saved = Preserved[page];
            if (saved != null) saved.CopyTo(destination);
            else _memory.PageSpan(page).CopyTo(destination);
        }
    }

    public void Dispose() => _memory.ReleaseSnapshot(this);
}
