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
    /// <summary>Entries seen while interpreted; compiled at <see cref="BlockCache.CompileThreshold"/>; -1: not compilable.</summary>
    public short Hits;
}

/// <summary>
/// Compiled blocks per guest-physical page, indexed by 2-byte slot like the decode cache (so a store
/// through any virtual alias invalidates them). Cold code stays
/// interpreted: a block start is compiled only after <see cref="CompileThreshold"/> entries, so short
/// runs (tests, boot) never pay for the IL compiler.
/// </summary>
internal sealed class BlockCache
{
    public const short CompileThreshold = 64;
    private const int MaxBlockBytes = BlockCompiler.MaxInstructions * 4;

    private readonly BlockEntry[]?[] _pages;

    public BlockCache(GuestMemory memory)
    {
        _pages = new BlockEntry[memory.PageCount][];
        memory.CodeWritten = Invalidate;
        memory.CodeFlushed = () => Array.Clear(_pages);
    }

    public BlockEntry[] Page(int page) => _pages[page] ??= new BlockEntry[GuestMemory.PageSize / 2];

    /// <summary>The debugger breakpoint generation the compiled blocks were built under.</summary>
    public int Generation { get; private set; }

    /// <summary>Drops every block (breakpoints changed: they must become block boundaries).</summary>
    public void Flush(int generation)
    {
        Array.Clear(_pages);
        Generation = generation;
    }

    private void Invalidate(int page, int offset, int length)
    {
        var entries = _pages[page];
        if (entries == null) return;
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
