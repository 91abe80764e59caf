namespace LiveMigration.Guest.Cpu;

/// <summary>
/// Zicsr: M- and S-mode CSRs as QEMU 7.2's rv64 CPU has them (without H). A CSR is illegal when it
/// does not exist, when the current privilege is below the level its number encodes, when a
/// read-only one is written, or when a counter-enable / TVM gate closes it.
/// </summary>
internal sealed unsafe partial class Hart
{
    /// <summary>RV64 (MXL=2) IMAFDC with S and U: QEMU 7.2's rv64 CPU without H.</summary>
    public const ulong Misa = (2UL << 62) | (1 << 0) | (1 << 2) | (1 << 3) | (1 << 5) | (1 << 8) | (1 << 12) | (1 << 18) | (1 << 20);
    /// <summary>QEMU reports its own version (7.2.22 here) as marchid and mimpid; so do we, for identical output.</summary>
    public const ulong ArchId = 0x70216;

    public static class Csr
    {
        public const uint Mstatus = 0x300, Misa = 0x301, Medeleg = 0x302, Mideleg = 0x303, Mie = 0x304, Mtvec = 0x305;
        public const uint Mcounteren = 0x306, Menvcfg = 0x30A, Mcountinhibit = 0x320;
        public const uint Mscratch = 0x340, Mepc = 0x341, Mcause = 0x342, Mtval = 0x343, Mip = 0x344;
        public const uint Sstatus = 0x100, Sie = 0x104, Stvec = 0x105, Scounteren = 0x106, Senvcfg = 0x10A;
        public const uint Sscratch = 0x140, Sepc = 0x141, Scause = 0x142, Stval = 0x143, Sip = 0x144, Stimecmp = 0x14D;
        public const uint Satp = 0x180;
        public const uint PmpCfg0 = 0x3A0, PmpCfg15 = 0x3AF, PmpAddr0 = 0x3B0, PmpAddr15 = 0x3BF; // pmpaddr16..63 do not exist in QEMU 7.2
        public const uint Tselect = 0x7A0, Tdata1 = 0x7A1, Tdata2 = 0x7A2, Tdata3 = 0x7A3, Tinfo = 0x7A4;
        public const uint Mcycle = 0xB00, Minstret = 0xB02, Cycle = 0xC00, Time = 0xC01, Instret = 0xC02;
        /// <summary>Zkr entropy source: reads return ES16 status with 16 bits from the host port.</summary>
        public const uint Seed = 0x015;
        public const uint Fflags = 0x001, Frm = 0x002, Fcsr = 0x003;
        public const uint Mvendorid = 0xF11, Marchid = 0xF12, Mimpid = 0xF13, Mhartid = 0xF14, Mconfigptr = 0xF15;
    }

    private bool ExecuteCsr(ref DecodedInsn d)
    {
        uint csr = (uint)d.Imm;
        ulong* x = _s->X;
        bool immediate = d.Op >= Op.Csrrwi;
        ulong operand = immediate ? d.Rs1 : x[d.Rs1];
        bool rdIsZero = d.Rd == CpuState.SinkRegister;
        bool writes = d.Op is Op.Csrrw or Op.Csrrwi || d.Rs1 != 0;
        bool reads = !(d.Op is Op.Csrrw or Op.Csrrwi) || !rdIsZero;

        if (writes && (csr >> 10) == 3) return false; // read-only space
        if (!Accessible(csr)) return false;
        // Zkr: seed must be accessed with a read-write instruction (csrrs x, seed, x0 is illegal).
        if (csr == Csr.Seed && !writes) return false;
        ulong old = 0;
        if (reads && !TryReadCsr(csr, out old)) return false;
        if (!reads && !CsrExists(csr)) return false;
        if (writes)
        {
            ulong value = d.Op switch
            {
                Op.Csrrw or Op.Csrrwi => operand,
                Op.Csrrs or Op.Csrrsi => old | operand,
                _ => old & ~operand,
            };
            WriteCsr(csr, value);
        }
        x[d.Rd] = old;
        return true;
    }

    /// <summary>Privilege and gate checks that come before existence (as QEMU's CSR predicates do).</summary>
    private bool Accessible(uint csr)
    {
        CpuState* s = _s;
        uint priv = s->Priv;
        if (priv < ((csr >> 8) & 3)) return false;
        if (csr is >= 0xC00 and <= 0xC1F)
        {
            int bit = (int)(csr & 31);
            if (priv < Priv.M && ((s->Mcounteren >> bit) & 1) == 0) return false;
            if (priv == Priv.U && ((s->Scounteren >> bit) & 1) == 0) return false;
        }
        if (csr == Csr.Satp && priv == Priv.S && (s->Mstatus & Mstatus.TVM) != 0) return false;
        if (csr == Csr.Stimecmp && priv < Priv.M && ((s->Mcounteren & 2) == 0 || (s->Menvcfg & Envcfg.STCE) == 0)) return false;
        if (csr == Csr.Seed && priv < Priv.M) return false; // no mseccfg: S and U never see seed
        return true;
    }

    private static bool IsHpm(uint csr) => csr is >= 0xB03 and <= 0xB1F or >= 0xC03 and <= 0xC1F or >= 0x323 and <= 0x33F;

    private bool CsrExists(uint csr) => TryReadCsrNoSideEffects(csr, out _);

    private bool TryReadCsrNoSideEffects(uint csr, out ulong value)
    {
        if (csr is Csr.Time or Csr.Seed) { value = 0; return true; }
        return TryReadCsr(csr, out value);
    }

    public bool TryReadCsr(uint csr, out ulong value)
    {
        CpuState* s = _s;
        value = 0;
        switch (csr)
        {
            case Csr.Mstatus: value = Mstatus.WithSd(s->Mstatus); return true;
            case Csr.Misa: value = Misa; return true;
            case Csr.Medeleg: value = s->Medeleg; return true;
            case Csr.Mideleg: value = s->Mideleg; return true;
            case Csr.Mie: value = s->Mie; return true;
            case Csr.Mtvec: value = s->Mtvec; return true;
            case Csr.Mcounteren: value = s->Mcounteren; return true;
            case Csr.Menvcfg: value = s->Menvcfg; return true;
            case Csr.Mcountinhibit: return true;
            case Csr.Mscratch: value = s->Mscratch; return true;
            case Csr.Mepc: value = s->Mepc; return true;
            case Csr.Mcause: value = s->Mcause; return true;
            case Csr.Mtval: value = s->Mtval; return true;
            case Csr.Mip: value = _machine.Mip; return true;
            case Csr.Sstatus: value = Mstatus.WithSd(s->Mstatus & Mstatus.SstatusMask); return true;
            case Csr.Sie: value = s->Mie & s->Mideleg; return true;
            case Csr.Stvec: value = s->Stvec; return true;
            case Csr.Scounteren: value = s->Scounteren; return true;
            case Csr.Senvcfg: value = s->Senvcfg; return true;
            case Csr.Sscratch: value = s->Sscratch; return true;
            case Csr.Sepc: value = s->Sepc; return true;
            case Csr.Scause: value = s->Scause; return true;
            case Csr.Stval: value = s->Stval; return true;
            case Csr.Sip: value = _machine.Mip & s->Mideleg; return true;
            case Csr.Stimecmp: value = s->Stimecmp; return true;
            case Csr.Satp: value = s->Satp; return true;
            case >= Csr.PmpCfg0 and <= Csr.PmpCfg15: return Pmp.TryReadCfg(s, (int)(csr - Csr.PmpCfg0), out value);
            case >= Csr.PmpAddr0 and <= Csr.PmpAddr15: value = Pmp.ReadAddr(s, (int)(csr - Csr.PmpAddr0)); return true;
            case Csr.Tselect: value = s->Tselect; return true;
            case Csr.Tdata1: value = s->Tdata1[s->Tselect]; return true;
            case Csr.Tdata2: value = s->Tdata2[s->Tselect]; return true;
            case Csr.Tdata3: return true;
            case Csr.Tinfo: value = Triggers.Info; return true;
            case Csr.Mcycle or Csr.Cycle: value = s->Icount + s->McycleOffset; return true;
            case Csr.Minstret or Csr.Instret: value = s->Icount + s->MinstretOffset; return true;
            case Csr.Time: value = _machine.ReadTime(); return true;
            case Csr.Seed: value = (2UL << 30) | _machine.HostPort.ReadEntropy(_machine); return true;
            case Csr.Marchid or Csr.Mimpid: value = ArchId; return true;
            case Csr.Mvendorid or Csr.Mhartid or Csr.Mconfigptr: return true;
            case Csr.Fflags or Csr.Frm or Csr.Fcsr: return TryReadFpCsr(csr, out value);
        }
        return IsHpm(csr); // no extra counters: they read zero
    }

    private void WriteCsr(uint csr, ulong value)
    {
        CpuState* s = _s;
        switch (csr)
        {
            case Csr.Mstatus: WriteMstatus((s->Mstatus & ~Mstatus.WritableMask) | (value & Mstatus.WritableMask)); break;
            case Csr.Sstatus:
                {
                    const ulong w = Mstatus.SstatusMask & Mstatus.WritableMask;
                    WriteMstatus((s->Mstatus & ~w) | (value & w));
                    break;
                }
            case Csr.Medeleg: s->Medeleg = value & Cause.Delegable; break;
            case Csr.Mideleg: s->Mideleg = value & Irq.Delegable; break;
            case Csr.Mie: s->Mie = value & Irq.MieWritable; break;
            case Csr.Sie: s->Mie = (s->Mie & ~s->Mideleg) | (value & s->Mideleg); break;
            case Csr.Mip:
                {
                    ulong mask = Irq.MipWritable;
                    if ((s->Menvcfg & Envcfg.STCE) != 0) mask &= ~Irq.STIP; // Sstc drives STIP
                    s->MipSoft = (s->MipSoft & ~mask) | (value & mask);
                    break;
                }
            case Csr.Sip:
                {
                    ulong mask = (Irq.SSIP | Irq.LCOFIP) & s->Mideleg;
                    s->MipSoft = (s->MipSoft & ~mask) | (value & mask);
                    break;
                }
            case Csr.Mtvec: s->Mtvec = LegalTvec(s->Mtvec, value); break;
            case Csr.Stvec: s->Stvec = LegalTvec(s->Stvec, value); break;
            case Csr.Mcounteren: s->Mcounteren = value; break;
            case Csr.Scounteren: s->Scounteren = value; break;
            case Csr.Menvcfg: s->Menvcfg = value & Envcfg.MenvcfgWritable; break;
            case Csr.Senvcfg: s->Senvcfg = value & Envcfg.SenvcfgWritable; break;
            case Csr.Mscratch: s->Mscratch = value; break;
            case Csr.Sscratch: s->Sscratch = value; break;
            case Csr.Mepc: s->Mepc = value & ~1UL; break;
            case Csr.Sepc: s->Sepc = value & ~1UL; break;
            case Csr.Mcause: s->Mcause = value; break;
            case Csr.Scause: s->Scause = value; break;
            case Csr.Mtval: s->Mtval = value; break;
            case Csr.Stval: s->Stval = value; break;
            case Csr.Stimecmp: s->Stimecmp = value; break;
            case Csr.Satp:
                if (!Sv.IsValidMode(value)) break; // an unsupported mode leaves satp as it was (QEMU 7.2)
                s->Satp = value;
                FlushTlb();
                break;
            case >= Csr.PmpCfg0 and <= Csr.PmpCfg15:
                if (Pmp.WriteCfg(s, (int)(csr - Csr.PmpCfg0), value)) FlushTlb();
                break;
            case >= Csr.PmpAddr0 and <= Csr.PmpAddr15:
                if (Pmp.WriteAddr(s, (int)(csr - Csr.PmpAddr0), value)) FlushTlb();
                break;
            case Csr.Tselect: if (value < Triggers.Count) s->Tselect = value; break;
            case Csr.Tdata1: s->Tdata1[s->Tselect] = Triggers.LegalTdata1(value, s->Tdata1[s->Tselect]); TriggersChanged(); break;
            case Csr.Tdata2: s->Tdata2[s->Tselect] = value; TriggersChanged(); break;
            // The written value is what the next instruction reads.
            case Csr.Mcycle: s->McycleOffset = value - (s->Icount + 1); break;
            case Csr.Minstret: s->MinstretOffset = value - (s->Icount + 1); break;
            case Csr.Fflags or Csr.Frm or Csr.Fcsr: WriteFpCsr(csr, value); break;
        }
    }

    /// <summary>Reserved vector modes are ignored, as QEMU does.</summary>
    private static ulong LegalTvec(ulong old, ulong value) => (value & 3) < 2 ? value & ~2UL : old;

    private void WriteMstatus(ulong value)
    {
        CpuState* s = _s;
        // MPP is WARL over M, S and U: the reserved value 2 keeps the old one.
        if ((value & Mstatus.MPP) == (2UL << Mstatus.MppShift)) value = (value & ~Mstatus.MPP) | (s->Mstatus & Mstatus.MPP);
        ulong old = s->Mstatus;
        s->Mstatus = value | Mstatus.Xlen64;
        if (((old ^ value) & Mstatus.TranslationBits) != 0) FlushTlb();
    }

    /// <summary>For the FPU: marks the FP state dirty after an instruction wrote an FP register or fcsr.</summary>
    internal void MarkFpDirty() => _s->Mstatus |= Mstatus.FsDirty;

    /// <summary>FP instructions and CSRs are illegal while mstatus.FS is Off.</summary>
    internal bool FpEnabled => Mstatus.FpEnabled(_s->Mstatus);
}

/// <summary>menvcfg/senvcfg bits (QEMU 7.2: FIOM, CBIE, CBCFE, CBZE; PBMTE and STCE in menvcfg).</summary>
public static class Envcfg
{
    public const ulong FIOM = 1, STCE = 1UL << 63, PBMTE = 1UL << 62;
    public const ulong SenvcfgWritable = 0xF1;
    public const ulong MenvcfgWritable = SenvcfgWritable | STCE | PBMTE;
}
