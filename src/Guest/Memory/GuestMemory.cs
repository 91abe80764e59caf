using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LiveMigration.Guest.Cpu;
using System.IO.Hashing;

namespace LiveMigration.Guest.Memory;

/// <summary>
/// Guest DRAM in 4 KiB pages. Every store passes a one-byte write barrier per page
/// (<see cref="WriteFast"/>): while it is set a store is a plain memory write; the first write after
/// anything cares (a dirty client cleared its bit, a snapshot was taken, code was decoded from the
/// page) takes the slow path, which does the bookkeeping and re-arms the barrier.
/// </summary>
public sealed unsafe partial class GuestMemory : IDisposable
{
    public const int PageShift = 12;
    public const int PageSize = 1 << PageShift;
    public const ulong DefaultBase = 0x8000_0000;
    /// <summary>Bit 0 of the dirty map belongs to the state digest.</summary>
    private const byte DigestBit = 1;

    public readonly ulong Base;
    public readonly ulong Size;
    public readonly int PageCount;
    internal readonly byte* Ram;
    internal readonly byte[] WriteFast;
    internal readonly byte[] DirtyMap;
    /// <summary>Pre-decoded instructions per page (2048 slots of 2 bytes each), null until code runs there.</summary>
    internal readonly DecodedInsn[]?[] DecodeCache;
    private readonly bool[] _touched;
    private bool[] _watched = [];
    private readonly ulong[] _pageHash;
    private byte _clientMask = DigestBit;
    private readonly List<MemorySnapshot> _snapshots = [];
    internal readonly object SnapshotLock = new();

    public GuestMemory(ulong size, ulong baseAddress = DefaultBase)
    {
        if (size == 0 || size % PageSize != 0) throw new ArgumentException("memory size must be a positive multiple of 4 KiB");
        Base = baseAddress;
        Size = size;
        PageCount = checked((int)(size / PageSize));
        // The OS hands out zero pages lazily, so an untouched 128 MiB guest costs little.
        Ram = HostPages.Allocate((nuint)size);
        WriteFast = GC.AllocateArray<byte>(PageCount, pinned: true); // compiled blocks read it through a pointer
        DirtyMap = new byte[PageCount];
        DecodeCache = new DecodedInsn[PageCount][];
        _touched = new bool[PageCount];
        _pageHash = new ulong[PageCount];
        Array.Fill(DirtyMap, DigestBit);
        Array.Fill(_pageHash, ZeroPageHash);
        for (int page = 0; page < PageCount; page++) _ramDigest += Mix(page, ZeroPageHash);
    }

    public static readonly ulong ZeroPageHash = XxHash3.HashToUInt64(new byte[PageSize]);

    // length is checked against Size first: Size - length would wrap for a length beyond RAM.
    public bool Contains(ulong address, int length)
        => length >= 0 && (ulong)length <= Size && address >= Base && address - Base <= Size - (ulong)length;

    public Span<byte> PageSpan(int page) => new(Ram + ((long)page << PageShift), PageSize);

    internal byte* PagePointer(int page) => Ram + ((long)page << PageShift);

    public bool IsTouched(int page) => _touched[page];

    /// <summary>True when the page holds only zeros; never-written pages answer without reading.</summary>
    public bool IsZeroPage(int page) => !_touched[page] || !PageSpan(page).ContainsAnyExcept((byte)0);

    /// <summary>True when the page was never written (it is zero without looking at it).</summary>
    public bool IsUntouched(int page) => !_touched[page];

    /// <summary>The runs (first, count) of pages ever written, ascending; the scan is vectorized.</summary>
    public List<(int First, int Count)> TouchedRuns() => Runs(_touched);

    /// <summary>The maximal runs (first, count) of set entries, ascending; the scan is vectorized.</summary>
    private static List<(int First, int Count)> Runs(ReadOnlySpan<bool> flags)
    {
        var runs = new List<(int, int)>();
        int at = 0;
        while (at < flags.Length)
        {
            int start = flags[at..].IndexOf(true);
            if (start < 0) break;
            start += at;
            int len = flags[start..].IndexOf(false);
            if (len < 0) len = flags.Length - start;
            runs.Add((start, len));
            at = start + len;
        }
        return runs;
    }

    // ---- Dirty clients ----

    public DirtyClient CreateDirtyClient(string name)
    {
        lock (SnapshotLock)
        {
            for (int bit = 1; bit < 8; bit++)
            {
                byte mask = (byte)(1 << bit);
                if ((_clientMask & mask) != 0) continue;
                _clientMask |= mask;
                // A new client starts with every page dirty: it has seen nothing yet.
                for (int i = 0; i < PageCount; i++) DirtyMap[i] |= mask;
                return new DirtyClient(this, mask, name);
            }
        }
        throw new InvalidOperationException("all 7 dirty-map client bits are in use");
    }

    internal void ReleaseClient(DirtyClient client)
    {
        lock (SnapshotLock)
        {
            _clientMask &= (byte)~client.Bit;
            for (int i = 0; i < PageCount; i++) DirtyMap[i] &= (byte)~client.Bit;
        }
    }

    // ---- Stores in flight ----
    // A store's fast path reads WriteFast and then writes RAM. A thread that clears a page's barrier
    // while the guest runs can meet a store that read the old barrier and has not landed yet. The
    // guest thread bumps the epoch at every safe point (between slices, before sleeping in WFI), after
    // its earlier stores; seeing the epoch move therefore means those stores are visible.
    private long _epoch;
    private volatile bool _guestActive;

    /// <summary>The guest thread is about to execute instructions (true) or holds no store in flight (false).</summary>
    internal void SetGuestActive(bool active)
    {
        _guestActive = active;
        Interlocked.Increment(ref _epoch);
    }

    /// <summary>A safe point on the guest thread: every store before it is visible to other threads.</summary>
    internal void SafePoint() => Interlocked.Increment(ref _epoch);

    /// <summary>
    /// Waits until no store that read a barrier before this call can still be in flight. Returns at
    /// once on the guest thread itself or when the guest is not executing.
    /// </summary>
    public void AwaitStoresInFlight()
    {
        Interlocked.MemoryBarrier(); // our barrier clears are visible before we read the epoch
        if (!_guestActive || Environment.CurrentManagedThreadId == GuestThread) return;
        long seen = Interlocked.Read(ref _epoch);
        var spin = new SpinWait();
        while (_guestActive && Interlocked.Read(ref _epoch) == seen) spin.SpinOnce();
    }

    /// <summary>The thread that runs the guest (set by Machine.Run).</summary>
    internal int GuestThread = -1;

    internal void ClearDirty(int page, byte bit)
    {
        DirtyMap[page] &= (byte)~bit;
        WriteFast[page] = 0;
    }

    // ---- Copy-on-write snapshots ----

    /// <summary>Live copy-on-write snapshots (each one makes the first write to a page copy it).</summary>
    public int SnapshotCount { get { lock (SnapshotLock) return _snapshots.Count; } }

    public MemorySnapshot CreateSnapshot()
    {
        lock (SnapshotLock)
        {
            var snapshot = new MemorySnapshot(this, (bool[])_touched.Clone());
            _snapshots.Add(snapshot);
            Array.Clear(WriteFast);
            return snapshot;
        }
    }

    internal void ReleaseSnapshot(MemorySnapshot snapshot)
    {
        lock (SnapshotLock) _snapshots.Remove(snapshot);
    }

    // ---- The write barrier's slow path ----

    /// <summary>Bookkeeping for a store of <paramref name="length"/> bytes at RAM offset <paramref name="offset"/>.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void BeforeWrite(ulong offset, int length)
    {
        int first = (int)(offset >> PageShift), last = (int)((offset + (ulong)length - 1) >> PageShift);
        for (int page = first; page <= last; page++)
        {
            if (_snapshots.Count != 0) PreserveForSnapshots(page);
            DirtyMap[page] = _clientMask;
            _touched[page] = true;
            if (_reportedCount != 0 && _reported![page]) Unreport(page);
            bool keepSlow = false;
            if (_watched.Length != 0 && _watched[page])
            {
                WatchedWrite?.Invoke(offset, length);
                keepSlow = true; // watched pages keep the slow path
            }
            if (IsPageTable(page))
            {
                PageTableWritten?.Invoke();
                keepSlow |= IsPageTable(page); // still marked: the write came from a walk's own A/D update
            }
            var code = DecodeCache[page];
            if (code != null)
            {
                InvalidateDecoded(code, page, offset, length);
                if (CodeWritten != null)
                {
                    long pageStart = (long)page << PageShift;
                    long from = Math.Max((long)offset, pageStart) - pageStart;
                    long to = Math.Min((long)offset + length, pageStart + PageSize) - pageStart;
                    CodeWritten(page, (int)from, (int)(to - from));
                }
                keepSlow = true; // pages holding decoded code keep the slow path
            }
            if (keepSlow) continue;
            WriteFast[page] = 1;
            // A collector on another thread may have cleared a bit since we set the map: then the
            // barrier must stay armed, or later fast stores would go unrecorded.
            Interlocked.MemoryBarrier();
            if (DirtyMap[page] != _clientMask) WriteFast[page] = 0;
        }
        // An instruction that starts on the previous page may straddle into this one.
        if ((offset & (PageSize - 1)) < 2 && first > 0 && DecodeCache[first - 1] is { } prev)
            prev[^1] = default;
    }

    private void PreserveForSnapshots(int page)
    {
        lock (SnapshotLock)
        {
            foreach (var s in _snapshots)
            {
                if (s.Preserved[page] != null) continue;
                s.Preserved[page] = PageSpan(page).ToArray();
            }
        }
    }

    private static void InvalidateDecoded(DecodedInsn[] code, int page, ulong offset, int length)
    {
        long pageStart = (long)page << PageShift;
        // Slot i covers bytes [2i, 2i+4): a write can change the instruction starting 2 bytes before it.
        long from = Math.Max((long)offset - 2 - pageStart, 0) >> 1;
        long to = Math.Min((long)offset + length - 1 - pageStart, PageSize - 1) >> 1;
        for (long i = from; i <= to; i++) code[i] = default;
    }

    /// <summary>Called by the decoder when it caches code for a page: stores there must now invalidate.</summary>
    internal DecodedInsn[] CodePage(int page)
    {
        var code = DecodeCache[page] ??= new DecodedInsn[PageSize / 2];
        WriteFast[page] = 0;
        return code;
    }

    /// <summary>Drops all decoded code (after a state restore rewrote memory wholesale).</summary>
    internal void FlushDecodeCache()
    {
        Array.Clear(DecodeCache);
        Array.Clear(WriteFast);
        CodeFlushed?.Invoke();
    }

    /// <summary>A store hit a watched page: (RAM offset, length). Set by the debugger's hooks.</summary>
    internal Action<ulong, int>? WatchedWrite;

    /// <summary>Pages whose stores must reach <see cref="WatchedWrite"/>; they never take the fast path.</summary>
    internal void SetWatchedPages(IReadOnlyCollection<int> pages)
    {
        var watched = new bool[pages.Count == 0 ? 0 : PageCount];
        foreach (int p in pages) { watched[p] = true; WriteFast[p] = 0; }
        _watched = watched;
    }

    /// <summary>A store hit a page holding code: (page, offset in page, length). Compiled blocks listen.</summary>
    internal Action<int, int, int>? CodeWritten;
    internal Action? CodeFlushed;

    // ---- Bulk access for devices, loaders and restore ----

    public void Write(ulong address, ReadOnlySpan<byte> data)
    {
        if (!Contains(address, data.Length)) throw new ArgumentOutOfRangeException(nameof(address), $"0x{address:x}+{data.Length} is outside guest RAM");
        if (data.Length == 0) return;
        ulong offset = address - Base;
        BeforeWrite(offset, data.Length);
        data.CopyTo(new Span<byte>(Ram + offset, data.Length));
    }

    public void Read(ulong address, Span<byte> destination)
    {
        if (!Contains(address, destination.Length)) throw new ArgumentOutOfRangeException(nameof(address), $"0x{address:x}+{destination.Length} is outside guest RAM");
        new ReadOnlySpan<byte>(Ram + (address - Base), destination.Length).CopyTo(destination);
    }

    public void WritePage(int page, ReadOnlySpan<byte> data)
    {
        if (data.Length != PageSize) throw new ArgumentException("a page is 4096 bytes");
        BeforeWrite((ulong)page << PageShift, PageSize);
        data.CopyTo(PageSpan(page));
    }

    /// <summary>Zeroes the page and forgets it was ever written.</summary>
    public void ZeroPage(int page)
    {
        if (!_touched[page]) return;
        bool reported = IsReportedFree(page); // zero is what a reported page holds: it stays reported
        BeforeWrite((ulong)page << PageShift, PageSize);
        PageSpan(page).Clear();
        _touched[page] = false;
        if (reported) { _reported![page] = true; _reportedCount++; WriteFast[page] = 0; }
    }

    // ---- Digest support ----

    /// <summary>
    /// A digest of all of RAM: the wrapping sum over pages of mix(page, hash of page). Only pages
    /// written since the last call are rehashed, and each one updates the sum by subtracting its old
    /// term and adding its new one, so the cost follows the guest's writes, not its RAM size.
    /// </summary>
    public ulong RefreshRamDigest() => RefreshRamDigest(null);

    /// <summary>
    /// As <see cref="RefreshRamDigest()"/>, leaving the pages marked in <paramref name="skip"/> as they
    /// were (their terms stay in the sum, stale): <see cref="RamDigestExcluding"/> over exactly those
    /// pages is then exact without hashing them.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    public ulong RefreshRamDigest(bool[]? skip)
    {
        EnsureAllPresent();
        var map = DirtyMap.AsSpan();
        var pages = new List<int>();
        for (int page = 0; page < PageCount; page++)
        {
            // Skip clean stretches eight pages at a time: the common case is a mostly clean map.
            if ((page & 7) == 0 && page + 8 <= PageCount &&
                (System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(map.Slice(page, 8)) & 0x0101_0101_0101_0101UL) == 0)
            {
                page += 7;
                continue;
            }
            if ((DirtyMap[page] & DigestBit) == 0 || (skip != null && skip[page])) continue;
            ClearDirty(page, DigestBit);
            pages.Add(page);
        }
        if (pages.Count > 0) AwaitStoresInFlight();
        foreach (int page in pages)
        {
            ulong hash = _touched[page] ? XxHash3.HashToUInt64(new ReadOnlySpan<byte>(PagePointer(page), PageSize)) : ZeroPageHash;
            _ramDigest += Mix(page, hash) - Mix(page, _pageHash[page]);
            _pageHash[page] = hash;
        }
        return _ramDigest;
    }

    /// <summary>
    /// The RAM digest's sum over every page except <paramref name="excluded"/>, as of the last
    /// refresh (<see cref="RefreshRamDigest(bool[])"/> may skip exactly these): post-copy after
    /// pre-copy verifies the pages the destination already holds with it, while the excluded ones are
    /// still on their way.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    public ulong RamDigestExcluding(IEnumerable<int> excluded)
    {
        ulong sum = _ramDigest;
        foreach (int page in excluded) sum -= Mix(page, _pageHash[page]);
        return sum;
    }

    /// <summary>Binds a page's hash to its index (a splitmix64-style finalizer).</summary>
    private static ulong Mix(int page, ulong hash)
    {
        ulong z = hash ^ ((ulong)(page + 1) * 0x9E37_79B9_7F4A_7C15UL);
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EBUL;
        return z ^ (z >> 31);
    }

    private ulong _ramDigest;

    private int _disposed;

    /// <summary>True once RAM has been freed; nothing may touch the memory after that.</summary>
    public bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>Frees RAM; later calls, from any thread, do nothing.</summary>
    public void Dispose()
    {
        FreeRam();
        GC.SuppressFinalize(this);
    }

    // A machine nobody disposed must not keep its RAM until the process exits.
    ~GuestMemory() => FreeRam();

    private void FreeRam()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) HostPages.Free(Ram, (nuint)Size);
    }
}
