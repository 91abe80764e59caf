namespace LiveMigration.Guest.Memory;

/// <summary>
/// Post-copy support: pages that have not arrived yet. While any page is absent, every load, store,
/// atomic and instruction fetch checks the page first (loads go the slow way and blocks are not
/// compiled); touching an absent page asks <see cref="PageFetcher"/> for it and blocks only that
/// instruction. Pages arrive through <see cref="SupplyPage"/>, from the fetcher or from a background
/// push on another thread.
/// </summary>
public sealed unsafe partial class GuestMemory
{
    private bool[]? _absent;
    private int _absentCount;
    /// <summary>Per page, threads waiting for it: a supply wakes only them (waking the guest at every pushed page starves the receiver).</summary>
    private int[]? _waiters;
    private readonly object _absentLock = new();

    /// <summary>True while at least one page has not arrived.</summary>
    public bool HasAbsentPages => Volatile.Read(ref _absentCount) > 0;

    public int AbsentPageCount => Volatile.Read(ref _absentCount);

    /// <summary>
    /// Called on the guest thread for an absent page the guest touches: deliver it with
    /// <see cref="SupplyPage"/> (or let a push deliver it) and return true, or return false when it
    /// cannot come now (link down): the machine then stops before the instruction, which is retried
    /// on the next run.
    /// </summary>
    public Func<int, bool>? PageFetcher { get; set; }

    public bool IsAbsent(int page) => _absent is { } a && Volatile.Read(ref a[page]);

    /// <summary>Marks pages [first, first + count) as not yet arrived (post-copy destination, before the guest resumes).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path
    public void MarkAbsentRange(int first, int count)
    {
        lock (_absentLock)
        {
            _absent ??= new bool[PageCount];
            _waiters ??= new int[PageCount];
            var range = _absent.AsSpan(first, count);
            int added = count - range.Count(true);
            range.Fill(true);
            WriteFast.AsSpan(first, count).Clear(); // stores must look first
            Interlocked.Add(ref _absentCount, added);
        }
    }

    /// <summary>Delivers a page's contents (any thread); returns false when it was not absent (sent twice).</summary>
    public bool SupplyPage(int page, ReadOnlySpan<byte> data)
    {
        if (data.Length != PageSize) throw new ArgumentException("a page is 4096 bytes");
        lock (_absentLock)
        {
            if (_absent == null || !_absent[page]) return false;
            // The guest cannot touch an absent page, so writing it here races with nothing.
            BeforeWrite((ulong)page << PageShift, PageSize);
            data.CopyTo(PageSpan(page));
            if (!data.ContainsAnyExcept((byte)0)) _touched[page] = false;
            Volatile.Write(ref _absent[page], false);
            Interlocked.Decrement(ref _absentCount);
            if (_waiters![page] != 0) Monitor.PulseAll(_absentLock);
            return true;
        }
    }

    /// <summary>Waits until the page has arrived (a background push may be delivering it); false on timeout.</summary>
    public bool WaitForPage(int page, TimeSpan timeout)
    {
        var until = DateTime.UtcNow + timeout;
        lock (_absentLock)
        {
            if (!IsAbsent(page)) return true;
            _waiters![page]++;
            try
            {
                while (IsAbsent(page))
                {
                    var left = until - DateTime.UtcNow;
                    if (left <= TimeSpan.Zero) return false;
                    Monitor.Wait(_absentLock, left);
                }
            }
            finally { _waiters[page]--; }
        }
        return true;
    }

    /// <summary>Makes the bytes [offset, offset + length) of RAM present; false when a page cannot come now.</summary>
    internal bool EnsurePresent(ulong offset, int length)
    {
        if (!HasAbsentPages) return true;
        int first = (int)(offset >> PageShift), last = (int)((offset + (ulong)Math.Max(length, 1) - 1) >> PageShift);
        for (int page = first; page <= last && page < PageCount; page++)
        {
            if (!IsAbsent(page)) continue;
            // The fetcher is dropped once the last page landed, and a push may land this one meanwhile:
            // only a page that is still absent after asking stops the machine.
            PageFetcher?.Invoke(page);
            if (IsAbsent(page)) return false;
        }
        return true;
    }

    /// <summary>Brings in every absent page (before a digest or a save): throws if one cannot come.</summary>
    internal void EnsureAllPresent()
    {
        if (!HasAbsentPages) return;
        for (int page = 0; page < PageCount; page++)
            if (IsAbsent(page) && !EnsurePresent((ulong)page << PageShift, PageSize))
                throw new InvalidOperationException($"guest page {page} has not arrived and cannot be fetched now");
    }
}
