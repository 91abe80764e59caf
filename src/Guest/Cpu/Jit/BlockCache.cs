using System.Collections.Concurrent;
using LiveMigration.Guest.Memory;

namespace LiveMigration.Guest.Cpu.Jit;

/// <summary>
/// A compiled block: returns the instructions it retired (never more than <paramref name="budget"/>),
/// with <see cref="BlockCompiler.BailFlag"/> set when it stopped before an instruction the
/// interpreter must execute; s->Pc is the next pc either way. Needs budget ≥ its length.
/// Translated blocks find each load's and store's RAM offset in the TLB (<paramref name="tlb"/>: the read
/// table, the write table follows it); untranslated ones ignore it.
/// </summary>
internal unsafe delegate ulong BlockFn(ulong* x, byte* ram, byte* fast, CpuState* s, ulong budget, byte* tlb);

/// <summary>Per-slot entry: hit counter until compiled, then the block.</summary>
internal struct BlockEntry
{
    public BlockFn? Fn;
    /// <summary>0 for a block of untranslated code; else the virtual page it was compiled at, | 1 (its pcs are virtual).</summary>
    public ulong Tag;
    public int Count;
    /// <summary>Bytes the block covers from its start (for invalidation).</summary>
    public ushort Bytes;
    /// <summary>Entries seen while interpreted; compiled at <see cref="BlockCache.Threshold"/>; -1: not compilable.</summary>
    public short Hits;
}

/// <summary>
/// Compiled blocks per guest-physical page, indexed by 2-byte slot like the decode cache (so a store
/// through any virtual alias invalidates them). Cold code stays
/// interpreted: a block start is compiled only after <see cref="Threshold"/> entries, so short
/// runs (tests, boot) never pay for the IL compiler.
/// </summary>
internal sealed class BlockCache
{
    /// <summary>Entries before a block is compiled.</summary>
    public readonly short Threshold;
    private const int MaxBlockBytes = BlockCompiler.MaxInstructions * 4;

    /// <summary><see cref="BlockEntry.Hits"/> of a block waiting for the background compiler.</summary>
    public const short Queued = short.MinValue;

    private readonly BlockEntry[]?[] _pages;
    // Bumped when a page's code is written (per page) or all blocks are dropped (the epoch): a block
    // compiled in the background from older code is then thrown away instead of installed.
    private readonly int[] _pageGenerations;
    private int _epoch;
    private readonly ConcurrentQueue<(BackgroundCompiler.Request Request, BlockFn? Fn)> _completed = new();
    private volatile bool _closed;

    public BlockCache(GuestMemory memory, bool background, short threshold)
    {
        if (threshold < 1) throw new ArgumentOutOfRangeException(nameof(threshold), "a block is compiled after at least one entry");
        Threshold = threshold;
        _pages = new BlockEntry[memory.PageCount][];
        _pageGenerations = new int[memory.PageCount];
        Background = background;
        memory.CodeWritten = Invalidate;
        memory.CodeFlushed = DropAll;
    }

    /// <summary>Compile on <see cref="BackgroundCompiler"/>'s thread instead of the guest's.</summary>
    public bool Background { get; }

    /// <summary>Whether background-compiled blocks wait for <see cref="InstallCompleted"/>.</summary>
    public bool HasCompleted => !_completed.IsEmpty;

    /// <summary>Asks for the block decoded at a slot; false when the compiler's queue is full.</summary>
    public bool Enqueue(int page, int slot, ulong tag, BlockCompiler.DecodedBlock block) =>
        BackgroundCompiler.TryEnqueue(new BackgroundCompiler.Request(this, page, slot, tag, Volatile.Read(ref _pageGenerations[page]), Volatile.Read(ref _epoch), block));

    internal bool IsStale(BackgroundCompiler.Request r) =>
        _closed || Volatile.Read(ref _epoch) != r.Epoch || Volatile.Read(ref _pageGenerations[r.Page]) != r.PageGeneration;

    internal void Complete(BackgroundCompiler.Request request, BlockFn? fn)
    {
        if (!_closed) _completed.Enqueue((request, fn));
    }

    /// <summary>On the guest thread, between blocks: installs what the background compiler finished, unless its code changed since.</summary>
    public void InstallCompleted()
    {
        while (_completed.TryDequeue(out var done))
        {
            var (r, fn) = done;
            if (IsStale(r)) continue;
            ref var e = ref Page(r.Page)[r.Slot];
            if (e.Hits != Queued) continue;
            if (fn == null) { e.Hits = -1; continue; }
            e = new BlockEntry { Fn = fn, Tag = r.Tag, Count = r.Block.Insns.Count, Bytes = (ushort)r.Block.Bytes };
        }
    }

    /// <summary>The machine is gone: nothing more is installed, and queued blocks are skipped.</summary>
    public void Close() => _closed = true;

    private void DropAll()
    {
        Array.Clear(_pages);
        Interlocked.Increment(ref _epoch);
    }

    public BlockEntry[] Page(int page) => _pages[page] ??= new BlockEntry[GuestMemory.PageSize / 2];

    /// <summary>The debugger breakpoint generation the compiled blocks were built under.</summary>
    public int Generation { get; private set; }

    /// <summary>Drops every block (breakpoints changed: they must become block boundaries).</summary>
    public void Flush(int generation)
    {
        DropAll();
        Generation = generation;
    }

    private void Invalidate(int page, int offset, int length)
    {
        var entries = _pages[page];
        if (entries == null) return;
        Interlocked.Increment(ref _pageGenerations[page]);
        int firstSlot = Math.Max(offset - MaxBlockBytes, 0) >> 1;
        int lastSlot = Math.Min(offset + length, GuestMemory.PageSize - 1) >> 1;
        for (int slot = firstSlot; slot <= lastSlot; slot++)
        {
            ref var e = ref entries[slot];
            if (e.Fn == null && e.Hits >= 0) continue;
            // The block covers [2*slot, 2*slot + Bytes); a non-compilable mark is dropped too.
            if (2 * slot + Math.Max((int)e.Bytes, 4) > offset) e = default;
        }
    }
}
