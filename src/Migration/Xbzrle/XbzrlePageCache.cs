namespace LiveMigration.Migration.Xbzrle;

/// <summary>
/// The sender's (and receiver's) copies of pages as last sent, for XBZRLE deltas: page number →
/// page contents, bounded by a byte budget, least-recently-used eviction. All storage is allocated
/// up front (one array of slots plus index arrays), so lookups, inserts and evictions allocate
/// nothing. Not thread-safe: one cache per migration stream.
/// </summary>
/// <remarks>
/// Typical sender use per dirty page: <c>TryGet</c> → on a hit, <see cref="XbzrleCodec.Encode"/>
/// against the cached copy and then copy the new contents into it; on a miss, send the whole page
/// and <see cref="Insert"/> it. The receiver mirrors the same sequence so both caches agree.
/// </remarks>
public sealed class XbzrlePageCache
{
    private const int None = -1;

    private byte[] _data = [];
    private long[] _slotPage = [];
    private int[] _prev = [], _next = [];
    private readonly Dictionary<long, int> _index = new();
    private int _head = None, _tail = None; // head = most recently used
    private int _freeCount;

    /// <param name="capacityBytes">Byte budget for page copies; 0 disables the cache (every lookup misses).</param>
    /// <param name="pageSize">Bytes per page (4096 for our machine).</param>
    public XbzrlePageCache(long capacityBytes, int pageSize = 4096)
    {
        if (pageSize <= 0) throw new ArgumentOutOfRangeException(nameof(pageSize), "page size must be positive");
        PageSize = pageSize;
        Allocate(capacityBytes);
    }

    public int PageSize { get; }
    /// <summary>The byte budget the cache was sized for.</summary>
    public long CapacityBytes { get; private set; }
    /// <summary>How many pages fit: <c>CapacityBytes / PageSize</c>.</summary>
    public int CapacityPages => _slotPage.Length;
    /// <summary>Pages currently cached.</summary>
    public int Count => _index.Count;
    public long Hits { get; private set; }
    public long Misses { get; private set; }
    public long Evictions { get; private set; }

    /// <summary>Looks a page up (counting a hit or a miss) and marks it most recently used.</summary>
    /// <param name="copy">The cached copy, writable so the caller can update it in place after sending.</param>
    public bool TryGet(long page, out Span<byte> copy)
    {
        if (_index.TryGetValue(page, out int slot))
        {
            Hits++;
            MoveToFront(slot);
            copy = Slot(slot);
            return true;
        }
        Misses++;
        copy = default;
        return false;
    }

    /// <summary>True when the page is cached; does not count or reorder.</summary>
    public bool Contains(long page) => _index.ContainsKey(page);

    /// <summary>
    /// Stores <paramref name="contents"/> as the copy of <paramref name="page"/> (replacing an older
    /// one), evicting the least recently used page when full. Returns false only when the cache has
    /// no room at all (capacity 0).
    /// </summary>
    public bool Insert(long page, ReadOnlySpan<byte> contents)
    {
        if (contents.Length != PageSize) throw new ArgumentException($"a page is {PageSize} bytes", nameof(contents));
        if (_slotPage.Length == 0) return false;
        if (!_index.TryGetValue(page, out int slot))
        {
            if (_freeCount > 0)
            {
                slot = _slotPage.Length - _freeCount;
                _freeCount--;
            }
            else
            {
                slot = _tail;
                Unlink(slot);
                _index.Remove(_slotPage[slot]);
                Evictions++;
            }
            _slotPage[slot] = page;
            _index.Add(page, slot);
            LinkFront(slot);
        }
        else
        {
            MoveToFront(slot);
        }
        contents.CopyTo(Slot(slot));
        return true;
    }

    /// <summary>Forgets a page (e.g. the guest reported it free, or the receiver lost it).</summary>
    public bool Remove(long page)
    {
        if (!_index.Remove(page, out int slot)) return false;
        Unlink(slot);
        // Keep slots dense: move the last used slot into the hole.
        int last = _slotPage.Length - _freeCount - 1;
        if (slot != last)
        {
            long movedPage = _slotPage[last];
            Slot(last).CopyTo(Slot(slot));
            _slotPage[slot] = movedPage;
            _index[movedPage] = slot;
            int p = _prev[last], n = _next[last];
            _prev[slot] = p;
            _next[slot] = n;
            if (p != None) _next[p] = slot; else _head = slot;
            if (n != None) _prev[n] = slot; else _tail = slot;
        }
        _freeCount++;
        return true;
    }

    /// <summary>Drops every page; keeps the capacity and the counters.</summary>
    public void Clear()
    {
        _index.Clear();
        _head = _tail = None;
        _freeCount = _slotPage.Length;
    }

    public void ResetCounters() => Hits = Misses = Evictions = 0;

    /// <summary>
    /// Changes the byte budget (QEMU's xbzrle-cache-size can change mid-migration). The most recently
    /// used pages that fit are kept; the rest are dropped (not counted as evictions).
    /// </summary>
    public void Resize(long capacityBytes)
    {
        var keep = new List<(long Page, byte[] Data)>();
        int newPages = PagesFor(capacityBytes);
        for (int s = _head; s != None && keep.Count < newPages; s = _next[s]) keep.Add((_slotPage[s], Slot(s).ToArray()));
        Allocate(capacityBytes);
        for (int k = keep.Count - 1; k >= 0; k--) Insert(keep[k].Page, keep[k].Data); // oldest first: the newest ends in front
    }

    /// <summary>Cached pages from most to least recently used (for tests and diagnostics).</summary>
    public IEnumerable<long> PagesByRecency()
    {
        var list = new List<long>(Count);
        for (int s = _head; s != None; s = _next[s]) list.Add(_slotPage[s]);
        return list;
    }

    private int PagesFor(long capacityBytes)
    {
        if (capacityBytes < 0) throw new ArgumentOutOfRangeException(nameof(capacityBytes), "cache size must not be negative");
        long pages = capacityBytes / PageSize;
        if (pages > Array.MaxLength / PageSize) throw new ArgumentOutOfRangeException(nameof(capacityBytes), "cache size too large");
        return (int)pages;
    }

    private void Allocate(long capacityBytes)
    {
        int pages = PagesFor(capacityBytes);
        CapacityBytes = capacityBytes;
        _data = GC.AllocateUninitializedArray<byte>(pages * PageSize);
        _slotPage = new long[pages];
        _prev = new int[pages];
        _next = new int[pages];
        _index.Clear();
        _index.EnsureCapacity(pages);
        _head = _tail = None;
        _freeCount = pages;
    }

    private Span<byte> Slot(int slot) => _data.AsSpan(slot * PageSize, PageSize);

    private void MoveToFront(int slot)
    {
        if (slot == _head) return;
        Unlink(slot);
        LinkFront(slot);
    }

    private void Unlink(int slot)
    {
        int p = _prev[slot], n = _next[slot];
        if (p != None) _next[p] = n; else _head = n;
        if (n != None) _prev[n] = p; else _tail = p;
    }

    private void LinkFront(int slot)
    {
        _prev[slot] = None;
        _next[slot] = _head;
        if (_head != None) _prev[_head] = slot;
        _head = slot;
        if (_tail == None) _tail = slot;
    }
}
