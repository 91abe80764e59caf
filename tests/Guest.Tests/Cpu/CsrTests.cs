using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.Tests.Infra;
using static LiveMigration.Guest.Tests.Infra.X;

namespace LiveMigration.Guest.Tests.Cpu;

/// <summary>Zicsr: read/modify/write forms and the side effects of each machine CSR.</summary>
public class CsrTests
{
    private const uint Mstatus = 0x300, Misa = 0x301, Mie = 0x304, Mtvec = 0x305, Mscratch = 0x340, Mepc = 0x341;
    private const uint Mcause = 0x342, Mtval = 0x343, Mip = 0x344, Mcycle = 0xB00, Minstret = 0xB02;
    private const uint Cycle = 0xC00, Instret = 0xC02, Mhartid = 0xF14, Mvendorid = 0xF11, Seed = 0x015;
    private const ulong MppM = 3UL << 11;

    [Fact]
    public void ReadModifyWriteForms()
    {
        using var rig = new Rig();
        rig.Emit(
            Rv.Csrrw(A0, Mscratch, A1),   // old 0, now 0xF0
            Rv.Csrrs(A2, Mscratch, A3),   // old 0xF0, now 0xFF
            Rv.Csrrc(A4, Mscratch, A5),   // old 0xFF, now 0xCF
            Rv.Csrrwi(A6, Mscratch, 31),  // old 0xCF, now 31
            Rv.Csrrsi(A7, Mscratch, 0),     // uimm 0 is a pure read
            Rv.Csrrci(T0, Mscratch, 1),   // old 31, now 30
            Rv.Csrr(T1, Mscratch));
        rig[A1] = 0xF0;
        rig[A3] = 0x0F;
        rig[A5] = 0x30;
        rig.Step(7);
        rig.AssertNoTrap();
        Assert.Equal([0UL, 0xF0, 0xFF, 0xCF, 31, 31, 30], new[] { rig[A0], rig[A2], rig[A4], rig[A6], rig[A7], rig[T0], rig[T1] });
    }

    [Fact]
    public void MscratchHoldsAll64Bits()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Csrw(Mscratch, A1), Rv.Csrr(A0, Mscratch));
        rig[A1] = 0xFEED_FACE_CAFE_BEEF;
        rig.Step(2);
        Assert.Equal(0xFEED_FACE_CAFE_BEEFUL, rig[A0]);
        Assert.Equal(0xFEED_FACE_CAFE_BEEFUL, rig.M.Cpu.Mscratch);
    }

    [Fact]
    public void MisaIsRv64ImafdcWithSAndUAsQemu()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Csrr(A0, Misa), Rv.Csrw(Misa, A1), Rv.Csrr(A2, Misa));
        rig[A1] = 0; // WARL: writes are ignored, not illegal
        rig.Step(3);
        rig.AssertNoTrap();
        const ulong expected = 0x8000_0000_0014_112DUL; // QEMU 7.2 rv64 reads ...1411AD: the same less H
        Assert.Equal(expected, rig[A0]);
        Assert.Equal(expected, rig[A2]);
    }

    [Fact]
    public void IdentityCsrsReadZero()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Csrr(A0, Mhartid), Rv.Csrr(A1, Mvendorid));
        rig[A0] = rig[A1] = 5;
        rig.Step(2);
        rig.AssertNoTrap();
        Assert.Equal(0UL, rig[A0]);
        Assert.Equal(0UL, rig[A1]);
    }

    [Fact]
    public void MstatusWritableBitsAreQemusWithoutH()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Csrr(A0, Mstatus), Rv.Csrw(Mstatus, A1), Rv.Csrr(A2, Mstatus));
        rig[A1] = ulong.MaxValue;
        rig.Step(3);
        Assert.Equal(0xA_0000_0000UL, rig[A0]); // UXL = SXL = 64-bit, MPP = U at reset
        // QEMU 7.2 reads 0x800000cb007e7faa: the same less MPV/GVA (H) and its writable UXL.
        Assert.Equal(0x8000_000A_007E_7FAAUL, rig[A2]);
    }

    [Fact]
    public void MieMasksToImplementedInterruptBits()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Csrw(Mie, A1), Rv.Csrr(A0, Mie));
        rig[A1] = ulong.MaxValue;
        rig.Step(2);
        Assert.Equal(0x2AAAUL, rig[A0]); // M and S software, timer, external; LCOFI (QEMU 7.2 less the VS bits)
    }

    [Fact]
    public void MepcClearsBitZero()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Csrw(Mepc, A1), Rv.Csrr(A0, Mepc));
        rig[A1] = 0x8000_1235;
        rig.Step(2);
        Assert.Equal(0x8000_1234UL, rig[A0]);
    }

    [Theory]
    [InlineData(0x8000_2000UL, 0x8000_2000UL)] // direct
    [InlineData(0x8000_2001UL, 0x8000_2001UL)] // vectored
    [InlineData(0x8000_2002UL, Rig.TrapVector)] // reserved mode: write ignored, as QEMU does
    [InlineData(0x8000_2003UL, Rig.TrapVector)]
    public void MtvecModes(ulong written, ulong readBack)
    {
        using var rig = new Rig();
        rig.Emit(Rv.Csrw(Mtvec, A1), Rv.Csrr(A0, Mtvec));
        rig[A1] = written;
        rig.Step(2);
        Assert.Equal(readBack, rig[A0]);
    }

    [Fact]
    public void McauseAndMtvalAreWritable()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Csrw(Mcause, A1), Rv.Csrw(Mtval, A2), Rv.Csrr(A3, Mcause), Rv.Csrr(A4, Mtval));
        rig[A1] = 0x8000_0000_0000_0007;
        rig[A2] = 0x1234;
        rig.Step(4);
        Assert.Equal(0x8000_0000_0000_0007UL, rig[A3]);
        Assert.Equal(0x1234UL, rig[A4]);
    }

    [Fact]
    public void CountersTrackIcount()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Csrr(A0, Minstret), Rv.Nop, Rv.Nop, Rv.Csrr(A1, Minstret), Rv.Csrr(A2, Mcycle),
                 Rv.Csrr(A3, Instret), Rv.Csrr(A4, Cycle));
        rig.Step(7);
        // The count of instructions retired before the reading one.
        Assert.Equal([0UL, 3, 4, 5, 6], new[] { rig[A0], rig[A1], rig[A2], rig[A3], rig[A4] });
    }

    [Fact]
    public void CounterWritesAreSeenByTheNextInstruction()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Csrw(Minstret, A1), Rv.Csrr(A0, Minstret), Rv.Csrw(Mcycle, A1), Rv.Nop, Rv.Csrr(A2, Mcycle), Rv.Csrr(A3, Instret));
        rig[A1] = 1000;
        rig.Step(6);
        Assert.Equal(1000UL, rig[A0]);
        Assert.Equal(1001UL, rig[A2]);
        Assert.Equal(1004UL, rig[A3]);
    }

    [Fact]
    public void MipReflectsPendingDeviceInterrupts()
    {
        using var rig = new Rig();
        // Write CLINT msip = 1, then read mip with interrupts globally disabled.
        rig.Emit(Rv.Lui(A1, 0x0200_0000), Rv.Addi(A2, Zero, 1), Rv.Sw(A2, A1, 0), Rv.Csrr(A0, Mip));
        rig.Step(4);
        rig.AssertNoTrap();
        Assert.Equal(Irq.MSIP, rig[A0]);
    }

    [Fact]
    public void SeedReadsEntropyFromThePortWithEs16Status()
    {
        using var rig = new Rig();
        rig.Port.Entropy = 0xBEEF;
        rig.Emit(Rv.Csrrw(A0, Seed, Zero));
        rig.Step();
        rig.AssertNoTrap();
        Assert.Equal((2UL << 30) | 0xBEEF, rig[A0]);
    }

    public static TheoryData<string, uint> IllegalCsrAccesses => new()
    {
        { "csrw mhartid", Rv.Csrw(Mhartid, A1) },
        { "csrrs mhartid with rs1!=0", Rv.Csrrs(A0, Mhartid, A1) },
        { "csrrwi mvendorid", Rv.Csrrwi(Zero, Mvendorid, 0) },
        { "csrw cycle", Rv.Csrw(Cycle, A1) },
        { "csrrci instret, 1", Rv.Csrrci(A0, Instret, 1) },
        { "unknown csr 0x7c0 read", Rv.Csrr(A0, 0x7C0) },
        { "mseccfg (no Smepmp)", Rv.Csrr(A0, 0x747) },
        { "pmpcfg1 (odd on RV64)", Rv.Csrr(A0, 0x3A1) },
        { "pmpaddr16 (16 entries)", Rv.Csrr(A0, 0x3C0) },
        { "dcsr (debug mode only)", Rv.Csrr(A0, 0x7B0) },
        { "unknown csr write", Rv.Csrw(0x7C0, A1) },
        { "seed read-only access", Rv.Csrr(A0, Seed) },
    };

    [Theory, MemberData(nameof(IllegalCsrAccesses))]
    public void IllegalAccessTrapsWithInstructionBits(string name, uint insn)
    {
        _ = name;
        using var rig = new Rig();
        rig.Emit(Rv.Nop, insn);
        rig[A0] = 77;
        rig[A1] = 1;
        rig.Step(2);
        rig.AssertTrap(Cause.IllegalInstruction, Rig.Base + 4, insn);
        Assert.Equal(77UL, rig[A0]); // rd is not written
    }

    [Fact]
    public void ReadOnlyCsrCanBeReadWithCsrrsX0AndCsrrcX0()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Csrrs(A0, Mhartid, Zero), Rv.Csrrc(A1, Mhartid, Zero), Rv.Csrrsi(A2, Instret, 0));
        rig[A0] = rig[A1] = 9;
        rig.Step(3);
        rig.AssertNoTrap();
        Assert.Equal(0UL, rig[A0]);
        Assert.Equal(0UL, rig[A1]);
        Assert.Equal(2UL, rig[A2]);
    }
}
