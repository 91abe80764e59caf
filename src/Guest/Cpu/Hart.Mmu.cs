using System.Runtime.CompilerServices;
using LiveMigration.Guest.Memory;

namespace LiveMigration.Guest.Cpu;

/// <summary>
/// Address translation: Sv39/48/57 walks with hardware A/D updates (as QEMU 7.2 does them), PMP
/// checks, and the TLB fills the interpreter's fast paths hit.
/// </summary>
internal sealed unsafe partial class Hart : IDisposable
{
    private readonly Tlb _tlb = new();
    /// <summary>Pages the TLB's translations were read from: a store to one of them flushes it.</summary>
    private readonly List<int> _tablePages = [];
    /// <summary>Set while fast paths must not be used (absent pages, read watchpoints, triggers): walks fill nothing.</summary>
    private bool _noFill;
    private bool _updatingPte;

    public void Dispose()
    {
        _tlb.Dispose();
        _blocks?.Close();
    }

    public void FlushTlb()
    {
        _tlb.Flush();
        foreach (int p in _tablePages) _mem.UnmarkPageTable(p);
        _tablePages.Clear();
        _breakOut = true;
    }

    private void OnPageTableWritten()
    {
        if (!_updatingPte) FlushTlb();
    }

    private uint DataPriv
    {
        get
        {
            CpuState* s = _s;
            return s->Priv == Priv.M && (s->Mstatus & Mstatus.MPRV) != 0 ? (uint)((s->Mstatus & Mstatus.MPP) >> Mstatus.MppShift) : s->Priv;
        }
    }

    /// <summary>True when some access of the current mode needs the TLB path (paging, or PMP binding this mode).</summary>
    private bool NeedsTranslation()
    {
        CpuState* s = _s;
        uint data = DataPriv;
        if (s->Priv < Priv.M || data < Priv.M) return true; // S/U: paging or PMP (no entry means no access)
        return Pmp.AnyLocked(s) || Triggers.AnyArmed(s, Priv.M);
    }

    private const ulong FaultNone = ulong.MaxValue;

    private static ulong PageFault(Access a) => a switch
    {
        Access.Fetch => Cause.InstructionPageFault,
        Access.Read => Cause.LoadPageFault,
        _ => Cause.StorePageFault,
    };

    private static ulong AccessFault(Access a) => a switch
    {
        Access.Fetch => Cause.InstructionAccessFault,
        Access.Read => Cause.LoadAccessFault,
        _ => Cause.StoreAccessFault,
    };

    /// <summary>
    /// Translates <paramref name="va"/> for <paramref name="size"/> bytes (all in one page) and
    /// checks PMP. Returns <see cref="FaultNone"/> with the physical address, a cause, or
    /// <see cref="StallCause"/> when a page table sits on an absent page.
    /// </summary>
    private ulong Translate(ulong va, int size, Access access, out ulong pa)
    {
        CpuState* s = _s;
        uint priv = access == Access.Fetch ? s->Priv : DataPriv;
        pa = va;
        bool pageUniform = true;
        ulong leafBytes = 0;
        if (priv < Priv.M && Sv.Mode(s->Satp) != Sv.Bare)
        {
            ulong r = Walk(va, access, priv, out pa, out leafBytes);
            if (r != FaultNone) return r;
        }
        int perms = Pmp.Check(s, priv, pa & ~0xFFFUL, GuestMemory.PageSize);
        if ((perms & Pmp.WholePage) == 0) { pageUniform = false; perms = Pmp.Check(s, priv, pa, (ulong)size); }
        int need = access switch { Access.Fetch => Pmp.X, Access.Read => Pmp.R, _ => Pmp.W };
        if ((perms & need) == 0) return AccessFault(access);
        ulong off = pa - _mem.Base;
        if (pageUniform && !_noFill && pa >= _mem.Base && off < _mem.Size && !_mem.IsAbsent((int)(off >> GuestMemory.PageShift)))
        {
            _tlb.Fill(_tlb.Table(priv, access), va, off);
            if (leafBytes > GuestMemory.PageSize && access != Access.Fetch) FillRegion(va, pa, leafBytes, priv, access, need);
        }
        return FaultNone;
    }

    /// <summary>
    /// After a walk that ended in a superpage leaf: the part of it in RAM becomes its table's region,
    /// when PMP gives that whole part the same permission. The leaf's A (and for a write D) are set,
    /// and anything that could change the translation flushes the TLB, the region with it.
    /// </summary>
    private void FillRegion(ulong va, ulong pa, ulong leafBytes, uint priv, Access access, int need)
    {
        if (_mem.HasAbsentPages) return;
        ulong into = va & (leafBytes - 1);
        ulong paStart = pa - into, ramEnd = _mem.Base + _mem.Size;
        ulong lo = Math.Max(paStart, _mem.Base), hi = Math.Min(paStart + leafBytes, ramEnd);
        if (hi <= lo || (Pmp.Check(_s, priv, lo, hi - lo) & need) == 0) return;
        Tlb.FillRegion(_tlb.Table(priv, access), va - into + (lo - paStart), lo - _mem.Base, hi - lo);
    }

    private ulong Walk(ulong va, Access access, uint priv, out ulong pa, out ulong leafBytes)
    {
        CpuState* s = _s;
        pa = 0;
        leafBytes = 0;
        int levels = Sv.Levels(s->Satp);
        int vaBits = 12 + 9 * levels;
        if ((ulong)((long)(va << (64 - vaBits)) >> (64 - vaBits)) != va) return PageFault(access);
        ulong table = (s->Satp & Sv.PpnMask) << 12;
        Span<int> pages = stackalloc int[5];
        int used = 0;
        for (int level = levels - 1; level >= 0; level--)
        {
            ulong pteAddr = table + ((va >> (12 + 9 * level)) & 511) * 8;
            if ((Pmp.Check(s, Priv.S, pteAddr, 8) & Pmp.R) == 0) return AccessFault(access);
            ulong off = pteAddr - _mem.Base;
            if (pteAddr < _mem.Base || off > _mem.Size - 8) return PageFault(access);
            if (!_mem.EnsurePresent(off, 8)) return StallCause;
            pages[used++] = (int)(off >> GuestMemory.PageShift);
            ulong pte = *(ulong*)(_mem.Ram + off);
            if ((pte & Sv.V) == 0 || (pte & (Sv.R | Sv.W)) == Sv.W || (pte & Sv.HighBits) != 0) return PageFault(access);
            ulong ppn = (pte >> 10) & Sv.PpnMask;
            if ((pte & (Sv.R | Sv.X)) == 0)
            {
                if (level == 0) return PageFault(access);
                table = ppn << 12;
                continue;
            }
            // A leaf: superpage alignment, then permissions.
            ulong low = (1UL << (9 * level)) - 1;
            if ((ppn & low) != 0) return PageFault(access);
            if (!Allowed(pte, access, priv)) return PageFault(access);
            ulong updated = pte | Sv.A | (access == Access.Write ? Sv.D : 0);
            if (updated != pte)
            {
                // The update is a store by the hardware: through the write barrier, but it changes no translation.
                _updatingPte = true;
                _mem.BeforeWrite(off, 8);
                _updatingPte = false;
                *(ulong*)(_mem.Ram + off) = updated;
            }
            foreach (int p in pages[..used]) MarkTablePage(p);
            pa = ((ppn & ~low) << 12) | (va & ((low << 12) | 0xFFF));
            leafBytes = (ulong)GuestMemory.PageSize << (9 * level);
            return FaultNone;
        }
        return PageFault(access);
    }

    /// <summary>
    /// The debugger's view of an address: identity in M-mode (for RAM) or without paging, else a walk of
    /// the current satp that changes nothing (no A/D bits, no TLB fill, no fault) and ignores the
    /// permission bits, as a debugger reads any mapped byte. False when nothing maps it.
    /// </summary>
    public bool DebugTranslate(ulong va, out ulong pa)
    {
        CpuState* s = _s;
        pa = va;
        if (Sv.Mode(s->Satp) == Sv.Bare || (s->Priv == Priv.M && _mem.Contains(va, 1))) return true;
        int levels = Sv.Levels(s->Satp);
        int vaBits = 12 + 9 * levels;
        if ((ulong)((long)(va << (64 - vaBits)) >> (64 - vaBits)) != va) return false;
        ulong table = (s->Satp & Sv.PpnMask) << 12;
        for (int level = levels - 1; level >= 0; level--)
        {
            ulong pteAddr = table + ((va >> (12 + 9 * level)) & 511) * 8;
            ulong off = pteAddr - _mem.Base;
            if (pteAddr < _mem.Base || off > _mem.Size - 8 || _mem.IsAbsent((int)(off >> GuestMemory.PageShift))) return false;
            ulong pte = *(ulong*)(_mem.Ram + off);
            if ((pte & Sv.V) == 0 || (pte & (Sv.R | Sv.W)) == Sv.W) return false;
            ulong ppn = (pte >> 10) & Sv.PpnMask;
            if ((pte & (Sv.R | Sv.X)) == 0)
            {
                table = ppn << 12;
                continue;
            }
            ulong low = (1UL << (9 * level)) - 1;
            pa = ((ppn & ~low) << 12) | (va & ((low << 12) | 0xFFF));
            return true;
        }
        return false;
    }

    private void MarkTablePage(int page)
    {
        if (_mem.MarkPageTable(page)) _tablePages.Add(page);
    }

    private bool Allowed(ulong pte, Access access, uint priv)
    {
        ulong st = _s->Mstatus;
        bool user = (pte & Sv.U) != 0;
        if (priv == Priv.U && !user) return false;
        if (priv == Priv.S && user && (access == Access.Fetch || (st & Mstatus.SUM) == 0)) return false;
        return access switch
        {
            Access.Fetch => (pte & Sv.X) != 0,
            Access.Read => (pte & Sv.R) != 0 || ((st & Mstatus.MXR) != 0 && (pte & Sv.X) != 0),
            _ => (pte & Sv.W) != 0,
        };
    }

    /// <summary>
    /// A data access of <paramref name="size"/> bytes at <paramref name="va"/> that may cross a page:
    /// both pages are translated before anything happens. pa2 is the physical address of the part on the
    /// second page (0 when there is none); <paramref name="first"/> is how many bytes lie on the first.
    /// A fault on the second page reports its first byte, as QEMU does.
    /// </summary>
    private ulong TranslateData(ulong va, int size, Access access, out ulong pa, out ulong pa2, out int first, out ulong tval)
    {
        pa2 = 0;
        tval = va;
        int inPage = GuestMemory.PageSize - (int)(va & 0xFFF);
        first = Math.Min(size, inPage);
        ulong r = Translate(va, first, access, out pa);
        if (r != FaultNone || first == size) return r;
        ulong next = (va | 0xFFF) + 1;
        tval = next;
        return Translate(next, size - first, access, out pa2);
    }

    /// <summary>Reads RAM at (pa, pa2) as <see cref="TranslateData"/> split it; false when it is not RAM.</summary>
    private bool ReadPhysical(ulong pa, ulong pa2, int first, int size, out ulong value, out bool stall)
    {
        value = 0;
        stall = false;
        if (!_mem.Contains(pa, first) || (first < size && !_mem.Contains(pa2, size - first))) return false;
        if (!_mem.EnsurePresent(pa - _mem.Base, first) || (first < size && !_mem.EnsurePresent(pa2 - _mem.Base, size - first))) { stall = true; return true; }
        ulong v = 0;
        new ReadOnlySpan<byte>(_mem.Ram + (pa - _mem.Base), first).CopyTo(new Span<byte>(&v, first));
        if (first < size) new ReadOnlySpan<byte>(_mem.Ram + (pa2 - _mem.Base), size - first).CopyTo(new Span<byte>((byte*)&v + first, size - first));
        value = v;
        if (_machine.Debug.WatchesReads) _machine.Debug.OnRead(pa, first);
        return true;
    }

    private bool WritePhysical(ulong pa, ulong pa2, int first, int size, ulong value, out bool stall)
    {
        stall = false;
        if (!_mem.Contains(pa, first) || (first < size && !_mem.Contains(pa2, size - first))) return false;
        if (!_mem.EnsurePresent(pa - _mem.Base, first) || (first < size && !_mem.EnsurePresent(pa2 - _mem.Base, size - first))) { stall = true; return true; }
        _mem.BeforeWrite(pa - _mem.Base, first);
        new ReadOnlySpan<byte>(&value, first).CopyTo(new Span<byte>(_mem.Ram + (pa - _mem.Base), first));
        if (first < size)
        {
            _mem.BeforeWrite(pa2 - _mem.Base, size - first);
            new ReadOnlySpan<byte>((byte*)&value + first, size - first).CopyTo(new Span<byte>(_mem.Ram + (pa2 - _mem.Base), size - first));
        }
        return true;
    }

    /// <summary>Fetch translation of the page holding <paramref name="pc"/>: its RAM offset, or a cause.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong TranslateFetch(ulong pc, out ulong ramOffset)
    {
        ramOffset = 0;
        ulong r = Translate(pc, 2, Access.Fetch, out ulong pa);
        if (r != FaultNone) return r;
        if (pa < _mem.Base || pa - _mem.Base >= _mem.Size) return Cause.InstructionAccessFault;
        ramOffset = pa - _mem.Base;
        return FaultNone;
    }

    /// <summary>
    /// The raw bits of the instruction at <paramref name="pc"/> (QEMU reports them in mtval for an
    /// illegal instruction). It was just fetched, so each halfword translates; 0 if one no longer does.
    /// </summary>
    private ulong IllegalBits(ulong pc, int length)
    {
        ulong bits = 0;
        for (int i = 0; i < length; i += 2)
        {
            if (TranslateFetch(pc + (ulong)i, out ulong off) != FaultNone || off + 2 > _mem.Size) return 0;
            bits |= (ulong)*(ushort*)(_mem.Ram + off) << (8 * i);
        }
        return bits;
    }
}
