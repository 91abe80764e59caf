using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.Tests.Infra;
using static LiveMigration.Guest.Tests.Infra.X;

namespace LiveMigration.Guest.Tests.Cpu;

/// <summary>Synchronous traps: causes, mtval, mepc, mstatus stacking and MRET.</summary>
public class TrapTests
{
    [Fact]
    public void EcallIsCause11WithZeroTval()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Nop, Rv.Ecall);
        rig.M.Cpu.Mtval = 55;
        rig.Step(2);
        rig.AssertTrap(Cause.EcallFromM, Rig.Base + 4, 0);
        Assert.Equal(2UL, rig.M.Icount);
    }

    [Fact]
    public void EbreakIsCause3WithZeroTval()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Ebreak);
        rig.Step();
        rig.AssertTrap(Cause.Breakpoint, Rig.Base, 0);
    }

    public static TheoryData<string, uint> IllegalWide => new()
    {
        { "custom-0", 0x0000000B },
        { "all ones", 0xFFFFFFFF },
        { "OP with bad funct7", Rv.R(0x02, A2, A1, 0, A0, 0x33) },
        { "slli with shamt bit 6", 0x04059513 | (1u << 26) },
        { "slliw with shamt bit 5", Rv.I(32, A1, 1, A0, 0x1B) },
        { "jalr funct3 != 0", Rv.I(0, A1, 1, A0, 0x67) },
        { "branch funct3 2", Rv.B(8, A1, A0, 2, 0x63) },
        { "load funct3 7", Rv.I(0, A1, 7, A0, 0x03) },
        { "store funct3 4", Rv.S(0, A1, A0, 4, 0x23) },
        { "hfence.vvma (no H)", 0x22000073 },
        { "ecall with rd != 0", 0x00000073 | (1u << 7) },
        { "csr funct3 4", Rv.I(0x340, 0, 4, A0, 0x73) },
        { "amo funct3 0", Rv.R(0, A2, A1, 0, A0, 0x2F) },
        { "lr with rs2 != 0", Rv.Amo(0x02, true, A0, A1, A2) },
        { "float load funct3 7", Rv.I(0, A1, 7, A0, 0x07) },
        { "fmadd.q (no Q)", Rv.R(0x3 | (2 << 2), A2, A1, 0, A0, 0x43) },
        { "fsqrt.d with rs2 != 0", Rv.R(0x2D, 1, A1, 0, A0, 0x53) },
    };

    [Theory, MemberData(nameof(IllegalWide))]
    public void IllegalInstructionIsCause2WithRawBits(string name, uint insn)
    {
        _ = name;
        using var rig = new Rig();
        rig.Emit(insn);
        rig[A0] = 3;
        rig.Step();
        rig.AssertTrap(Cause.IllegalInstruction, Rig.Base, insn);
        Assert.Equal(3UL, rig[A0]);
    }

    [Fact]
    public void TrapStacksMieIntoMpieAndMretRestoresIt()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Ecall, Rv.Addi(A0, Zero, 1));
        // Handler: skip the ecall and return.
        rig.M.Memory.Write(Rig.TrapVector + 0x100, [
            .. BitConverter.GetBytes(Rv.Csrr(T0, 0x341)), .. BitConverter.GetBytes(Rv.Addi(T0, T0, 4)),
            .. BitConverter.GetBytes(Rv.Csrw(0x341, T0)), .. BitConverter.GetBytes(Rv.Mret)]);
        rig.M.Cpu.Mtvec = Rig.TrapVector + 0x100;
        rig.M.Cpu.Mstatus = Mstatus.MIE;
        rig.Step();
        Assert.Equal(Mstatus.MPIE | Mstatus.MPP, rig.M.Cpu.Mstatus & ~Mstatus.Xlen64); // MIE -> MPIE, MIE cleared, MPP = M
        Assert.Equal(Rig.TrapVector + 0x100, rig.M.Pc);
        rig.Step(4);
        Assert.Equal(Mstatus.MIE | Mstatus.MPIE, rig.M.Cpu.Mstatus & ~Mstatus.Xlen64); // MIE <- MPIE, MPIE <- 1, MPP <- U
        Assert.Equal(Rig.Base + 4, rig.M.Pc);
        rig.Step();
        Assert.Equal(1UL, rig[A0]);
    }

    [Fact]
    public void TrapWithMieClearLeavesMpieClearAndMretSetsMpie()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Ecall);
        rig.M.Memory.Write(Rig.TrapVector + 0x100, BitConverter.GetBytes(Rv.Mret));
        rig.M.Cpu.Mtvec = Rig.TrapVector + 0x100;
        rig.M.Cpu.Mstatus = Mstatus.MPIE;
        rig.Step();
        Assert.Equal(Mstatus.MPP, rig.M.Cpu.Mstatus & ~Mstatus.Xlen64);
        rig.Step();
        Assert.Equal(Mstatus.MPIE, rig.M.Cpu.Mstatus & ~Mstatus.Xlen64);
        Assert.Equal(Rig.Base, rig.M.Pc); // mepc pointed at the ecall
    }

    [Fact]
    public void ExceptionsIgnoreVectoredMode()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Ecall);
        rig.M.Cpu.Mtvec = Rig.TrapVector | 1;
        rig.Step();
        Assert.Equal(Rig.TrapVector, rig.M.Pc);
    }

    [Fact]
    public void TrapInsideCompressedCodeRecordsItsPc()
    {
        using var rig = new Rig();
        rig.EmitC(Rv.CNop, 0x0000);
        rig.Step(2);
        rig.AssertTrap(Cause.IllegalInstruction, Rig.Base + 2, 0);
    }

    [Fact]
    public void FenceAndFenceIAreNops()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Fence, Rv.FenceI, Rv.Addi(A0, Zero, 1));
        rig.Step(3);
        rig.AssertNoTrap();
        Assert.Equal(1UL, rig[A0]);
        Assert.Equal(Rig.Base + 12, rig.M.Pc);
    }

    [Fact]
    public void GuestFaultLoopNeverThrowsOnTheHost()
    {
        const ulong mtvec = 0x2000_0000; // for a vector below 0x1000 see FetchFromLowAddressAtSliceStart
        // mtvec outside RAM: every fetch faults. The machine must keep counting, not throw.
        using var rig = new Rig();
        rig.Emit(Rv.Ecall);
        rig.M.Cpu.Mtvec = mtvec;
        Assert.Equal(StopReason.InstructionLimit, rig.M.Run(5000)); // spans several Execute slices
        Assert.Equal(5000UL, rig.M.Icount);
        Assert.Equal(Cause.InstructionAccessFault, rig.M.Cpu.Mcause);
        Assert.Equal(mtvec, rig.M.Cpu.Mtval);
    }

    [Fact]
    public void FetchFromLowAddressAtSliceStart()
    {
        using var rig = new Rig();
        rig.M.SetPc(0x800);
        rig.Step();
        rig.AssertTrap(Cause.InstructionAccessFault, 0x800, 0x800);
        rig.M.Cpu.Mtvec = 0x10; // the handler itself is unreachable: faults forever, never throws
        rig.M.SetPc(0x800);     // a slice that starts at a low pc (the trap vector parked us in RAM)
        Assert.Equal(StopReason.InstructionLimit, rig.M.Run(5000));
        Assert.Equal(0x10UL, rig.M.Cpu.Mtval);
    }

    [Fact]
    public void WideInstructionCutOffByTheEndOfRamIsAFetchFaultOnItsSecondHalf()
    {
        using var rig = new Rig();
        ulong last = Rig.Base + Rig.RamSize - 2;
        rig.M.Memory.Write(last, [0x13, 0x05]); // low half of a 32-bit addi
        rig.M.SetPc(last);
        rig.Step();
        rig.AssertTrap(Cause.InstructionAccessFault, last, last + 2);
    }

    [Fact]
    public void IllegalWideInstructionAcrossPagesReportsAllItsBits()
    {
        using var rig = new Rig();
        ulong at = Rig.Base + 0x3000 - 2;
        rig.M.Memory.Write(at, BitConverter.GetBytes(0xFFFF_FFFFu));
        rig.M.SetPc(at);
        rig.Step();
        rig.AssertTrap(Cause.IllegalInstruction, at, 0xFFFF_FFFF);
    }

    [Fact]
    public void ATrappingInstructionCountsOneStep()
    {
        // icount counts steps, including ones that trap: the trap handler's first instruction is step 2.
        using var rig = new Rig();
        rig.Emit(Rv.Ecall);
        rig.Step();
        Assert.Equal(1UL, rig.M.Icount);
        Assert.Equal(Rig.TrapVector, rig.M.Pc);
    }
}
