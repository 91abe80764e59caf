namespace LiveMigration.Guest.Cpu;

/// <summary>Zicsr: the M-mode CSRs we implement. Unknown CSRs and writes to read-only ones are illegal.</summary>
internal sealed unsafe partial class Hart
{
    /// <summary>RV64 (MXL=2) with A, C, I, M.</summary>
    public const ulong Misa = (2UL << 62) | (1 << 0) | (1 << 2) | (1 << 8) | (1 << 12);

    public static class Csr
    {
        public const uint Mstatus = 0x300, Misa = 0x301, Mie = 0x304, Mtvec = 0x305, Mcountinhibit = 0x320;
        public const uint Mscratch = 0x340, Mepc = 0x341, Mcause = 0x342, Mtval = 0x343, Mip = 0x344;
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

    private static bool IsPmp(uint csr) => csr is >= 0x3A0 and <= 0x3EF;
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
            case Csr.Mstatus: value = s->Mstatus | Mstatus.MPP; return true;
            case Csr.Misa: value = Misa; return true;
            case Csr.Mie: value = s->Mie; return true;
            case Csr.Mtvec: value = s->Mtvec; return true;
            case Csr.Mcountinhibit: return true;
            case Csr.Mscratch: value = s->Mscratch; return true;
            case Csr.Mepc: value = s->Mepc; return true;
            case Csr.Mcause: value = s->Mcause; return true;
            case Csr.Mtval: value = s->Mtval; return true;
            case Csr.Mip: value = _machine.Mip; return true;
            case Csr.Mcycle or Csr.Cycle: value = s->Icount + s->McycleOffset; return true;
            case Csr.Minstret or Csr.Instret: value = s->Icount + s->MinstretOffset; return true;
            case Csr.Time: value = _machine.ReadTime(); return true;
            case Csr.Seed: value = (2UL << 30) | _machine.HostPort.ReadEntropy(_machine); return true;
            case Csr.Mvendorid or Csr.Marchid or Csr.Mimpid or Csr.Mhartid or Csr.Mconfigptr: return true;
            case Csr.Fflags or Csr.Frm or Csr.Fcsr: return TryReadFpCsr(csr, out value);
        }
        return IsPmp(csr) || IsHpm(csr); // PMP entries hardwired to zero; no extra counters
    }

    private void WriteCsr(uint csr, ulong value)
    {
        CpuState* s = _s;
        switch (csr)
        {
            case Csr.Mstatus: s->Mstatus = value & Mstatus.WritableMask; break;
            case Csr.Mie: s->Mie = value & Irq.MieWritable; break;
            case Csr.Mtvec:
                if ((value & 3) < 2) s->Mtvec = value & ~2UL; // reserved modes are ignored, as QEMU does
                break;
            case Csr.Mscratch: s->Mscratch = value; break;
            case Csr.Mepc: s->Mepc = value & ~1UL; break;
            case Csr.Mcause: s->Mcause = value; break;
            case Csr.Mtval: s->Mtval = value; break;
            // The written value is what the next instruction reads.
            case Csr.Mcycle: s->McycleOffset = value - (s->Icount + 1); break;
            case Csr.Minstret: s->MinstretOffset = value - (s->Icount + 1); break;
            case Csr.Fflags or Csr.Frm or Csr.Fcsr: WriteFpCsr(csr, value); break;
        }
    }
}
