namespace LiveMigration.Guest.Memory;

/// <summary>
/// Pages the hart's TLB read translations from. Like pages holding decoded code they keep the write
/// barrier armed; a store to one tells the hart, which flushes its TLB (so it never holds a stale entry).
/// </summary>
public sealed unsafe partial class GuestMemory
{
    private bool[]? _pageTable;

    /// <summary>A store (guest, DMA or restore) hit a page-table page.</summary>
    internal Action? PageTableWritten;

    /// <summary>Marks a page the TLB depends on; false when it already was.</summary>
    internal bool MarkPageTable(int page)
    {
        _pageTable ??= new bool[PageCount];
        if (_pageTable[page]) return false;
        _pageTable[page] = true;
        WriteFast[page] = 0;
        return true;
    }

    internal void UnmarkPageTable(int page)
    {
        if (_pageTable != null) _pageTable[page] = false;
    }

    private bool IsPageTable(int page) => _pageTable != null && _pageTable[page];
}
