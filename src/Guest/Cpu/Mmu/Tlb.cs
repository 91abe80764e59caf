using System.Runtime.InteropServices;
using LiveMigration.Guest.Memory;

namespace LiveMigration.Guest.Cpu;

/// <summary>One translation: the virtual page number and what to add to a virtual address to get its RAM offset.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct TlbEntry
{
    public ulong Tag;
    public ulong Addend;
}

/// <summary>
/// A virtually and physically contiguous RAM range with one translation: va hits when
/// va - <see cref="Va"/> &lt; <see cref="Limit"/> (the length less 7, so an access of up to 8 bytes
/// stays inside; 0 when empty), and its RAM offset is (va - Va) + <see cref="Ram"/>.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
internal struct TlbRegion
{
    public ulong Va;
    public ulong Limit;
    public ulong Ram;
}

internal enum Access { Read = 0, Write = 1, Fetch = 2 }

/// <summary>
/// A direct-mapped software TLB per (effective privilege, access kind), 16 K entries each (a 64 MiB
/// working set of 4 KiB pages fits), holding RAM pages only (MMIO always walks). It caches nothing the
/// guest could observe: every store to a page a walk read (page-table pages) flushes it, as do satp,
/// sfence.vma, PMP and the mstatus bits that change permissions. So a translation is a pure function
/// of memory and CSRs, and a restored checkpoint (with an empty TLB) runs exactly as the machine it
/// was taken from. A flush clears only the entries filled since the last one (Linux flushes often,
/// and clearing all 2.3 MB each time would cost more than the walks it saves).
/// Each read and write table also keeps one <see cref="TlbRegion"/>: the RAM part of the superpage
/// it last filled from, which compiled code checks first with one compare, as it checks RAM without
/// paging (a gigapage-mapped guest then pays almost nothing for translation).
/// </summary>
internal sealed unsafe class Tlb : IDisposable
{
    public const int Bits = 14;
    public const int Size = 1 << Bits;
    public const ulong Mask = Size - 1;
    private const int Modes = 3, Kinds = 3, Tables = Modes * Kinds;
    /// <summary>Entries per table: <see cref="Size"/> translations, then two slots that hold its <see cref="TlbRegion"/>.</summary>
    public const int Stride = Size + 2;
    /// <summary>Bytes from a table to the next kind's (read to write) and to its region.</summary>
    public static readonly int TableBytes = Stride * sizeof(TlbEntry), RegionOffset = Size * sizeof(TlbEntry);
    /// <summary>Fills remembered for the next flush; beyond this many it clears every table.</summary>
    private const int FillLog = 4096;
    private readonly TlbEntry* _entries;
    private readonly int* _filled;
    private int _fillCount = FillLog + 1;
    // 2.3 MB looked up at random: on huge pages, like guest RAM.
    private static readonly nuint EntriesBytes = (nuint)((Tables + 1) * Stride * sizeof(TlbEntry));

    public Tlb()
    {
        _entries = (TlbEntry*)HostPages.Allocate(EntriesBytes);
        _filled = (int*)NativeMemory.Alloc(FillLog * sizeof(int));
        Flush();
        new Span<TlbEntry>(Empty, Stride).Fill(new TlbEntry { Tag = ulong.MaxValue }); // its region: Limit 0, never hit
    }

    /// <summary>A table that never holds anything: lookups in it always miss (every access goes the slow way).</summary>
    public TlbEntry* Empty => _entries + Tables * Stride;

    /// <summary>The table for accesses of <paramref name="kind"/> at effective privilege <paramref name="priv"/>.</summary>
    public TlbEntry* Table(uint priv, Access kind) => _entries + ((priv == Priv.M ? 2 : (int)priv) * Kinds + (int)kind) * Stride;

    private static TlbRegion* Region(TlbEntry* table) => (TlbRegion*)(table + Size);

    public void Flush()
    {
        if (_fillCount > FillLog) new Span<TlbEntry>(_entries, Tables * Stride).Fill(new TlbEntry { Tag = ulong.MaxValue });
        else for (int i = 0; i < _fillCount; i++) _entries[_filled[i]].Tag = ulong.MaxValue;
        for (int t = 0; t < Tables; t++) *Region(_entries + t * Stride) = default;
        _fillCount = 0;
    }

    public void Fill(TlbEntry* table, ulong va, ulong ramOffset)
    {
        int index = (int)(table - _entries) + (int)((va >> 12) & Mask);
        ref TlbEntry e = ref _entries[index];
        e.Tag = va >> 12;
        e.Addend = (ramOffset & ~0xFFFUL) - (va & ~0xFFFUL);
        if (_fillCount < FillLog) _filled[_fillCount] = index;
        if (_fillCount <= FillLog) _fillCount++;
    }

    /// <summary>The RAM range [<paramref name="ramOffset"/>, + <paramref name="length"/>) seen at <paramref name="va"/> through one superpage leaf.</summary>
    public static void FillRegion(TlbEntry* table, ulong va, ulong ramOffset, ulong length) =>
        *Region(table) = new TlbRegion { Va = va, Limit = length - 7, Ram = ramOffset };

    public void Dispose()
    {
        HostPages.Free((byte*)_entries, EntriesBytes);
        NativeMemory.Free(_filled);
    }
}

/// <summary>satp modes: Sv39, Sv48 and Sv57 as QEMU 7.2's rv64 accepts them.</summary>
internal static class Sv
{
    public const ulong Bare = 0, Sv39 = 8, Sv48 = 9, Sv57 = 10;

    public static ulong Mode(ulong satp) => satp >> 60;

    public static bool IsValidMode(ulong satp) => Mode(satp) is Bare or Sv39 or Sv48 or Sv57;

    public static int Levels(ulong satp) => (int)(Mode(satp) - Sv39) + 3;

    public const ulong V = 1, R = 2, W = 4, X = 8, U = 16, G = 32, A = 64, D = 128;
    /// <summary>Bits 63:54 (N, PBMT and reserved): QEMU 7.2 without Svnapot/Svpbmt faults on them.</summary>
    public const ulong HighBits = 0x3FFUL << 54;
    public const ulong PpnMask = (1UL << 44) - 1;
}
