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

    /// <summary>f0..f31 (F and D). Singles are NaN-boxed: the upper 32 bits all ones.</summary>
    public fixed ulong F[32];
    /// <summary>fcsr: fflags in bits 0..4, frm in bits 5..7.</summary>
    public uint Fcsr;
    public uint Reserved1;
}

/// <summary>mstatus bits we model (M-mode only: MPP reads as M).</summary>
public static class Mstatus
{
    public const ulong MIE = 1UL << 3;
    public const ulong MPIE = 1UL << 7;
    public const ulong MPP = 3UL << 11;
    public const ulong WritableMask = MIE | MPIE;
}

/// <summary>Interrupt bits of mip/mie.</summary>
public static class Irq
{
    public const ulong MSIP = 1UL << 3;
    public const ulong MTIP = 1UL << 7;
    public const ulong MEIP = 1UL << 11;
    public const ulong MieWritable = MSIP | MTIP | MEIP;
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
    public const ulong EcallFromM = 11;

    public const ulong InterruptBit = 1UL << 63;
    public const ulong MachineSoftwareInterrupt = InterruptBit | 3;
    public const ulong MachineTimerInterrupt = InterruptBit | 7;
    public const ulong MachineExternalInterrupt = InterruptBit | 11;
}
