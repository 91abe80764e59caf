namespace LiveMigration.Guest.Memory;

/// <summary>
/// Pages the guest reported free through virtio-balloon free page reporting. Reporting hands a
/// page to the host: it is zeroed (its contents are discarded, as QEMU's MADV_DONTNEED does), and no
/// strategy sends it. Unlike the bare-metal balloon, the guest takes a page back without a word, by
/// writing to it: the first such store meets a disarmed write barrier and the slow path clears the
/// page's bit. Writes by the machinery itself (restore, migration) pass the same barrier, so the bits
/// follow what the guest did, identically on every host.
/// </summary>
public sealed unsafe partial class GuestMemory
{
    private bool[]? _reported;
    private int _reportedCount;

    /// <summary>True while the page is reported free and the guest has not written it since.</summary>
    public bool IsReportedFree(int page) => _reported != null && _reported[page];

    public int ReportedFreeCount => _reportedCount;

    /// <summary>Discards and marks free <paramref name="count"/> pages from <paramref name="first"/> (guest thread only).</summary>
    public void ReportFree(int first, int count)
    {
        if (first < 0 || count < 0 || first > PageCount - count)
            throw new ArgumentOutOfRangeException(nameof(first), $"pages {first}..+{count} are outside RAM ({PageCount} pages)");
        _reported ??= new bool[PageCount];
        for (int page = first; page < first + count; page++)
        {
            ZeroPage(page);
            if (!_reported[page]) { _reported[page] = true; _reportedCount++; }
            WriteFast[page] = 0; // the guest's next store to it must come through BeforeWrite
        }
    }

    /// <summary>The reported pages as maximal runs (first, count), ascending.</summary>
    public List<(int First, int Count)> ReportedRuns() => _reportedCount == 0 ? [] : Runs(_reported);

    /// <summary>Replaces the reported set (restore): the pages must already be zero, or become so with the RAM that follows.</summary>
    internal void SetReportedRuns(IReadOnlyList<(int First, int Count)> runs)
    {
        if (_reportedCount != 0) Array.Clear(_reported!);
        _reportedCount = 0;
        if (runs.Count == 0) return;
        _reported ??= new bool[PageCount];
        foreach (var (first, count) in runs)
            for (int page = first; page < first + count; page++)
            {
                if (!_reported[page]) { _reported[page] = true; _reportedCount++; }
                WriteFast[page] = 0;
            }
    }

    /// <summary>From the write barrier's slow path: the page is written, so it is the guest's again.</summary>
    private void Unreport(int page)
    {
        _reported![page] = false;
        _reportedCount--;
    }
}
