using System.Runtime.InteropServices;

namespace LiveMigration.Guest.Cpu;

/// <summary>One translation: the virtual page number and what to add to a virtual address to get its RAM offset.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct TlbEntry
{
    public ulong Tag;
    public ulong Addend;
}

internal enum Access { Read = 0, Write = 1, Fetch = 2 }

/// <summary>
/// A direct-mapped software TLB per (effective privilege, access kind), 256 entries each, holding
/// RAM pages only (MMIO always walks). It caches nothing the guest could observe: every store to a
/// page a walk read (page-table pages) flushes it, as do satp, sfence.vma, PMP and the mstatus bits
/// that change permissions. So a translation is a pure function of memory and CSRs, and a restored
/// checkpoint (with an empty TLB) runs exactly as the machine it was taken from.
/// </summary>
internal sealed unsafe class Tlb : IDisposable
{
    public const int Bits = 8;
    public const int Size = 1 << Bits;
    public const ulong Mask = Size - 1;
    private const int Modes = 3, Kinds = 3;
    private readonly TlbEntry* _entries;

    public Tlb()
    {
        _entries = (TlbEntry*)NativeMemory.Alloc((nuint)((Modes * Kinds + 1) * Size * sizeof(TlbEntry)));
        Flush();
        new Span<TlbEntry>(Empty, Size).Fill(new TlbEntry { Tag = ulong.MaxValue });
    }

    /// <summary>A table that never holds anything: lookups in it always miss (every access goes the slow way).</summary>
    public TlbEntry* Empty => _entries + Modes * Kinds * Size;

    /// <summary>The table for accesses of <paramref name="kind"/> at effective privilege <paramref name="priv"/>.</summary>
    public TlbEntry* Table(uint priv, Access kind) => _entries + ((priv == Priv.M ? 2 : (int)priv) * Kinds + (int)kind) * Size;

    public void Flush() => new Span<TlbEntry>(_entries, Modes * Kinds * Size).Fill(new TlbEntry { Tag = ulong.MaxValue });

    public static void Fill(TlbEntry* table, ulong va, ulong ramOffset)
    {
        ref TlbEntry e = ref table[(va >> 12) & Mask];
        e.Tag = va >> 12;
        e.Addend = (ramOffset & ~0xFFFUL) - (va & ~0xFFFUL);
    }

    public void Dispose() => NativeMemory.Free(_entries);
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
