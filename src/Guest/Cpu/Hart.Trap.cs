namespace LiveMigration.Guest.Cpu;

/// <summary>Traps, delegation to S-mode, MRET/SRET and the interrupt choice across privilege levels.</summary>
internal sealed unsafe partial class Hart
{
    /// <summary>
    /// Enters the trap handler (M, or S when delegated and the hart is not in M); returns the new pc.
    /// A privilege change can change how memory is translated, so the interpreter leaves its loop.
    /// </summary>
    private ulong Trap(ulong pc, ulong cause, ulong tval)
    {
        CpuState* s = _s;
        bool interrupt = (cause & Cause.InterruptBit) != 0;
        int code = (int)(cause & 63);
        ulong deleg = interrupt ? s->Mideleg : s->Medeleg;
        uint from = s->Priv;
        ulong st = s->Mstatus;
        ulong tvec;
        if (from <= Priv.S && ((deleg >> code) & 1) != 0)
        {
            s->Sepc = pc & ~1UL;
            s->Scause = cause;
            s->Stval = tval;
            st = (st & ~(Mstatus.SPIE | Mstatus.SPP | Mstatus.SIE))
               | ((st & Mstatus.SIE) != 0 ? Mstatus.SPIE : 0)
               | (from == Priv.S ? Mstatus.SPP : 0);
            s->Priv = Priv.S;
            tvec = s->Stvec;
        }
        else
        {
            s->Mepc = pc & ~1UL;
            s->Mcause = cause;
            s->Mtval = tval;
            st = (st & ~(Mstatus.MIE | Mstatus.MPIE | Mstatus.MPP))
               | ((st & Mstatus.MIE) != 0 ? Mstatus.MPIE : 0)
               | ((ulong)from << Mstatus.MppShift);
            s->Priv = Priv.M;
            tvec = s->Mtvec;
        }
        s->Mstatus = st;
        if (from != s->Priv) _breakOut = true;
        ulong target = tvec & ~3UL;
        if (interrupt && (tvec & 3) == 1) target += 4 * (ulong)code;
        return target;
    }

    /// <summary>MRET: back to MPP with MIE = MPIE; MPRV clears when leaving M.</summary>
    private ulong Mret()
    {
        CpuState* s = _s;
        ulong st = s->Mstatus;
        uint to = (uint)((st & Mstatus.MPP) >> Mstatus.MppShift);
        st = (st & ~(Mstatus.MIE | Mstatus.MPP)) | ((st & Mstatus.MPIE) != 0 ? Mstatus.MIE : 0) | Mstatus.MPIE;
        if (to != Priv.M) st &= ~Mstatus.MPRV;
        s->Mstatus = st;
        s->Priv = to;
        return s->Mepc;
    }

    /// <summary>SRET: back to SPP with SIE = SPIE.</summary>
    private ulong Sret()
    {
        CpuState* s = _s;
        ulong st = s->Mstatus;
        uint to = (st & Mstatus.SPP) != 0 ? Priv.S : Priv.U;
        st = (st & ~(Mstatus.SIE | Mstatus.SPP)) | ((st & Mstatus.SPIE) != 0 ? Mstatus.SIE : 0) | Mstatus.SPIE;
        st &= ~Mstatus.MPRV; // SRET always leaves M's view
        s->Mstatus = st;
        s->Priv = to;
        return s->Sepc;
    }

    /// <summary>The mip register: device lines, Sstc's timer and the bits software wrote.</summary>
    public ulong Mip(ulong deviceLines)
    {
        CpuState* s = _s;
        ulong mip = deviceLines | s->MipSoft;
        if ((s->Menvcfg & Envcfg.STCE) != 0)
            mip = (mip & ~Irq.STIP) | (_machine.Clint.Time >= s->Stimecmp ? Irq.STIP : 0);
        return mip;
    }

    // Highest first: MEI, MSI, MTI, SEI, SSI, STI, LCOFI (privileged spec 3.1.9).
    private static ReadOnlySpan<byte> InterruptOrder => [11, 3, 7, 9, 1, 5, 13];

    /// <summary>
    /// The interrupt the hart takes now, or 0: M-level ones (not delegated) when priv &lt; M or MIE,
    /// then S-level ones (delegated) when priv &lt; S or (priv = S and SIE).
    /// </summary>
    public ulong InterruptToTake(ulong pendingAndEnabled)
    {
        CpuState* s = _s;
        ulong m = pendingAndEnabled & ~s->Mideleg, sl = pendingAndEnabled & s->Mideleg;
        bool mOn = s->Priv < Priv.M || (s->Mstatus & Mstatus.MIE) != 0;
        bool sOn = s->Priv < Priv.S || (s->Priv == Priv.S && (s->Mstatus & Mstatus.SIE) != 0);
        ulong take = (mOn ? m : 0) | (sOn ? sl : 0);
        if (take == 0) return 0;
        // An enabled M-level interrupt outranks every S-level one.
        if (mOn && m != 0) take = m;
        foreach (byte bit in InterruptOrder)
            if ((take & (1UL << bit)) != 0) return Cause.InterruptBit | bit;
        return 0;
    }

    /// <summary>Takes <paramref name="cause"/> (from <see cref="InterruptToTake"/>) between instructions.</summary>
    public void TakeInterrupt(ulong cause)
    {
        _s->Waiting = 0;
        _s->Pc = Trap(_s->Pc, cause, 0);
    }
}
