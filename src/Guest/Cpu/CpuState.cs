using System.Runtime.InteropServices;

namespace LiveMigration.Guest.Cpu;

/// <summary>
/// The architectural state of the hart as one blittable struct. X[32] is a write sink:
/// instructions with rd = x0 are decoded to write slot 32, so x0 reads zero without a branch.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public unsafe struct CpuState
{
    public const int RegisterSlots = 33;
    public const int SinkRegister = 32;

    public fixed ulong X[RegisterSlots];
    public ulong Pc;
    /// <summary>Retired-instruction count: the deterministic clock every input is keyed on.</summary>
    public ulong Icount;

    public ulong Mstatus;
    public ulong Mie;
    public ulong Mtvec;
    public ulong Mscratch;
    public ulong Mepc;
    public ulong Mcause;
    public ulong Mtval;
    public ulong Mcountinhibit;
    /// <summary>mcycle and minstret are icount plus these offsets, so writes to them are cheap.</summary>
    public ulong McycleOffset;
    public ulong MinstretOffset;

    /// <summary>LR reservation: address, or ulong.MaxValue when none is held.</summary>
    public ulong Reservation;
    /// <summary>The value LR loaded (sign-extended): like QEMU 7.2, SC succeeds only if memory still holds it.</summary>
    public ulong ReservationValue;
    /// <summary>1 while the hart sleeps in WFI.</summary>
    public uint Waiting;
    public uint Reserved0;

    // ---- Privilege modes, supervisor CSRs, PMP, triggers (CPU state v3) ----
    /// <summary>Current privilege level (<see cref="Priv"/>): 3 M, 1 S, 0 U.</summary>
    public uint Priv;
    public uint Reserved1;
    public ulong Medeleg;
    public ulong Mideleg;
    /// <summary>The software-writable bits of mip (SSIP, STIP, SEIP, LCOFIP); the devices drive the rest.</summary>
    public ulong MipSoft;
    public ulong Mcounteren;
    public ulong Menvcfg;
    public ulong Stvec;
    public ulong Sscratch;
    public ulong Sepc;
    public ulong Scause;
    public ulong Stval;
    public ulong Satp;
    public ulong Scounteren;
    public ulong Senvcfg;
    /// <summary>Sstc: STIP is time &gt;= stimecmp while menvcfg.STCE is set.</summary>
    public ulong Stimecmp;
    public fixed byte PmpCfg[Pmp.Entries];
    public fixed ulong PmpAddr[Pmp.Entries];
    public ulong Tselect;
    public fixed ulong Tdata1[Triggers.Count];
    public fixed ulong Tdata2[Triggers.Count];
    /// <summary>f0..f31 (F and D). Singles are NaN-boxed: the upper 32 bits all ones.</summary>
    public fixed ulong F[32];
    /// <summary>fcsr: fflags in bits 0..4, frm in bits 5..7.</summary>
    public uint Fcsr;
    public uint Reserved2;
}

/// <summary>Privilege levels as encoded in mstatus.MPP and dcsr.</summary>
public static class Priv
{
    public const uint U = 0, S = 1, M = 3;
}

/// <summary>mstatus bits (privileged spec 1.12, RV64), writable as on QEMU 7.2's rv64 CPU without H.</summary>
public static class Mstatus
{
    public const ulong SIE = 1UL << 1;
    public const ulong MIE = 1UL << 3;
    public const ulong SPIE = 1UL << 5;
    public const ulong MPIE = 1UL << 7;
    public const ulong SPP = 1UL << 8;
    public const ulong VS = 3UL << 9;
    public const int MppShift = 11;
    public const ulong MPP = 3UL << MppShift;
    /// <summary>FP state: 0 Off (FP instructions and CSRs are illegal), 1 Initial, 2 Clean, 3 Dirty.</summary>
    public const ulong FS = 3UL << 13;
    public const ulong FsDirty = 3UL << 13;
    public const ulong XS = 3UL << 15;
    public const ulong MPRV = 1UL << 17;
    public const ulong SUM = 1UL << 18;
    public const ulong MXR = 1UL << 19;
    public const ulong TVM = 1UL << 20;
    public const ulong TW = 1UL << 21;
    public const ulong TSR = 1UL << 22;
    public const ulong UXL = 3UL << 32;
    public const ulong SXL = 3UL << 34;
    public const ulong SD = 1UL << 63;
    /// <summary>UXL = SXL = 2 (64-bit), the reset value.</summary>
    public const ulong Xlen64 = (2UL << 32) | (2UL << 34);
    public const ulong WritableMask = SIE | MIE | SPIE | MPIE | SPP | VS | MPP | FS | MPRV | SUM | MXR | TVM | TW | TSR;
    /// <summary>What sstatus shows of mstatus (SD is computed).</summary>
    public const ulong SstatusMask = SIE | SPIE | SPP | VS | FS | XS | SUM | MXR | UXL;
    /// <summary>The only bits CPU state v1/v2 kept (M-mode only; MPP read as M).</summary>
    public const ulong LegacyMask = MIE | MPIE;
    /// <summary>Changing these changes what a translated access may do: the TLB is flushed.</summary>
    public const ulong TranslationBits = MPRV | MPP | SUM | MXR;

    /// <summary>mstatus with SD computed from FS/VS/XS, as it reads.</summary>
    public static ulong WithSd(ulong v)
        => (v & FS) == FS || (v & VS) == VS || (v & XS) == XS ? v | SD : v & ~SD;

    /// <summary>FP instructions and CSRs are legal only while FS is not Off.</summary>
    public static bool FpEnabled(ulong mstatus) => (mstatus & FS) != 0;
}

/// <summary>Interrupt bits of mip/mie.</summary>
public static class Irq
{
    public const ulong SSIP = 1UL << 1;
    public const ulong MSIP = 1UL << 3;
    public const ulong STIP = 1UL << 5;
    public const ulong MTIP = 1UL << 7;
    public const ulong SEIP = 1UL << 9;
    public const ulong MEIP = 1UL << 11;
    public const ulong LCOFIP = 1UL << 13;
    public const ulong SupervisorBits = SSIP | STIP | SEIP | LCOFIP;
    public const ulong MieWritable = MSIP | MTIP | MEIP | SupervisorBits;
    /// <summary>Interrupts mideleg can delegate (QEMU 7.2 without H).</summary>
    public const ulong Delegable = SupervisorBits;
    /// <summary>mip bits software may write (STIP only while Sstc does not drive it).</summary>
    public const ulong MipWritable = SSIP | STIP | SEIP | LCOFIP;
}

/// <summary>mcause values (RISC-V privileged spec, table 3.6).</summary>
public static class Cause
{
    public const ulong InstructionMisaligned = 0;
    public const ulong InstructionAccessFault = 1;
    public const ulong IllegalInstruction = 2;
    public const ulong Breakpoint = 3;
    public const ulong LoadMisaligned = 4;
    public const ulong LoadAccessFault = 5;
    public const ulong StoreMisaligned = 6;
    public const ulong StoreAccessFault = 7;
    public const ulong EcallFromU = 8;
    public const ulong EcallFromS = 9;
    public const ulong EcallFromM = 11;
    public const ulong InstructionPageFault = 12;
    public const ulong LoadPageFault = 13;
    public const ulong StorePageFault = 15;
    /// <summary>Exceptions medeleg can delegate (QEMU 7.2 without H: all but ecall from M).</summary>
    public const ulong Delegable = 0xB3FF;

    public const ulong InterruptBit = 1UL << 63;
    public const ulong MachineSoftwareInterrupt = InterruptBit | 3;
    public const ulong MachineTimerInterrupt = InterruptBit | 7;
    public const ulong MachineExternalInterrupt = InterruptBit | 11;
    public const ulong SupervisorSoftwareInterrupt = InterruptBit | 1;
    public const ulong SupervisorTimerInterrupt = InterruptBit | 5;
    public const ulong SupervisorExternalInterrupt = InterruptBit | 9;
}
