using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.Tests.Infra;
using static LiveMigration.Guest.Tests.Infra.X;

namespace LiveMigration.Guest.Tests.Cpu;

/// <summary>Every RVC form executed once, checking its expanded effect and that pc advances by 2.</summary>
public class CompressedTests
{
    private const ulong Sext32Min = 0xFFFF_FFFF_8000_0000;

    /// <summary>Runs one compressed instruction with the given registers; returns the rig for checks.</summary>
    private static Rig One(ushort insn, params (int Reg, ulong Value)[] regs)
    {
        var rig = new Rig();
        rig.EmitC(insn, Rv.CNop);
        foreach (var (r, v) in regs) rig[r] = v;
        rig.Step();
        return rig;
    }

    private static void AssertFallsThrough(Rig rig)
    {
        Assert.Equal(Rig.Base + 2, rig.M.Pc);
        Assert.Equal(1UL, rig.M.Icount);
    }

    public static TheoryData<string, ushort, ulong, ulong, ulong> AluForms => new()
    {
        // name, insn, a0/s0 input (rd), second input (a1/s1 or rs2), expected rd
        { "c.addi -32", Rv.CAddi(A0, -32), 0, 0, unchecked((ulong)-32L) },
        { "c.addi wraps", Rv.CAddi(A0, 1), ulong.MaxValue, 0, 0 },
        { "c.addiw sign-extends", Rv.CAddiw(A0, 1), 0x7FFF_FFFF, 0, Sext32Min },
        { "c.addiw 0 is sext.w", Rv.CAddiw(A0, 0), 0xAAAA_AAAA_8000_0001, 0, 0xFFFF_FFFF_8000_0001 },
        { "c.li -1", Rv.CLi(A0, -1), 77, 0, ulong.MaxValue },
        { "c.li 31", Rv.CLi(A0, 31), 77, 0, 31 },
        { "c.lui -32 (0xfffe0000)", Rv.CLui(A0, -32), 0, 0, 0xFFFF_FFFF_FFFE_0000 },
        { "c.lui 31", Rv.CLui(A0, 31), 0, 0, 0x1F000 },
        { "c.srli 63", Rv.CSrli(A0, 63), 0x8000_0000_0000_0000, 0, 1 },
        { "c.srli 32", Rv.CSrli(A0, 32), 0xFFFF_FFFF_0000_0000, 0, 0xFFFF_FFFF },
        { "c.srai 63", Rv.CSrai(A0, 63), 0x8000_0000_0000_0000, 0, ulong.MaxValue },
        { "c.srai 1", Rv.CSrai(A0, 1), 0x8000_0000_0000_0000, 0, 0xC000_0000_0000_0000 },
        { "c.andi -16", Rv.CAndi(A0, -16), 0x1234, 0, 0x1230 },
        { "c.andi 31", Rv.CAndi(A0, 31), 0xFFFF, 0, 0x1F },
        { "c.slli 33", Rv.CSlli(A0, 33), 1, 0, 1UL << 33 },
        { "c.slli 63", Rv.CSlli(A0, 63), 3, 0, 0x8000_0000_0000_0000 },
        { "c.sub", Rv.CArith("sub", A0, A1), 5, 7, unchecked((ulong)-2L) },
        { "c.xor", Rv.CArith("xor", A0, A1), 0xFF, 0x0F, 0xF0 },
        { "c.or", Rv.CArith("or", A0, A1), 0xF0, 0x0F, 0xFF },
        { "c.and", Rv.CArith("and", A0, A1), 0xF0, 0x3C, 0x30 },
        { "c.subw", Rv.CArith("subw", A0, A1), 0x1_0000_0000, 1, ulong.MaxValue },
        { "c.subw sign-extends", Rv.CArith("subw", A0, A1), 0x8000_0000, 0, Sext32Min },
        { "c.addw", Rv.CArith("addw", A0, A1), 0x7FFF_FFFF, 1, Sext32Min },
        { "c.mv", Rv.CMv(A0, A1), 1, 0xDEAD, 0xDEAD },
        { "c.add", Rv.CAdd(A0, A1), 0x10, 0x20, 0x30 },
    };

    [Theory, MemberData(nameof(AluForms))]
    public void Alu(string name, ushort insn, ulong rd, ulong rs2, ulong expected)
    {
        _ = name;
        using var rig = One(insn, (A0, rd), (A1, rs2));
        AssertFallsThrough(rig);
        Assert.Equal(expected.ToString("x16"), rig[A0].ToString("x16"));
    }

    [Theory]
    [InlineData(-512)]
    [InlineData(496)]
    [InlineData(16)]
    public void Addi16spAdjustsSp(int imm)
    {
        using var rig = One(Rv.CAddi16sp(imm), (Sp, Rig.Data + 0x1000));
        AssertFallsThrough(rig);
        Assert.Equal(Rig.Data + 0x1000 + (ulong)(long)imm, rig[Sp]);
    }

    [Theory]
    [InlineData(4u)]
    [InlineData(1020u)]
    public void Addi4spnAddsToSp(uint imm)
    {
        using var rig = One(Rv.CAddi4spn(S1, imm), (Sp, Rig.Data));
        AssertFallsThrough(rig);
        Assert.Equal(Rig.Data + imm, rig[S1]);
    }

    [Fact]
    public void RegisterLoadsAndStores()
    {
        using var rig = new Rig();
        rig.WriteU64(Rig.Data + 120, 0x8877_6655_0000_0000); // c.lw reaches at most 124
        rig.WriteU64(Rig.Data + 248, 0x8877_6655_8433_2211);
        rig.EmitC(Rv.CLw(A0, A1, 124), Rv.CLd(A2, A1, 248), Rv.CSw(A3, A1, 64), Rv.CSd(A3, A1, 128));
        rig[A1] = Rig.Data;
        rig[A3] = 0x1122_3344_5566_7788;
        rig.Step(4);
        rig.AssertNoTrap();
        Assert.Equal(0xFFFF_FFFF_8877_6655UL, rig[A0]); // c.lw sign-extends
        Assert.Equal(0x8877_6655_8433_2211UL, rig[A2]);
        Assert.Equal(0x5566_7788UL, rig.ReadU64(Rig.Data + 64));
        Assert.Equal(0x1122_3344_5566_7788UL, rig.ReadU64(Rig.Data + 128));
        Assert.Equal(Rig.Base + 8, rig.M.Pc);
    }

    [Fact]
    public void StackPointerLoadsAndStores()
    {
        using var rig = new Rig();
        rig.WriteU64(Rig.Data + 504, 0xF000_0000_8000_0001);
        rig.WriteU64(Rig.Data + 248, 0x0000_0000_9000_0002);
        rig.EmitC(Rv.CLdsp(A0, 504), Rv.CLwsp(A1, 252 - 4), Rv.CSwsp(A2, 252), Rv.CSdsp(A2, 496));
        rig[Sp] = Rig.Data;
        rig[A2] = 0xCAFE_F00D_1234_5678;
        rig.Step(4);
        rig.AssertNoTrap();
        Assert.Equal(0xF000_0000_8000_0001UL, rig[A0]);
        Assert.Equal(0xFFFF_FFFF_9000_0002UL, rig[A1]); // c.lwsp sign-extends
        Assert.Equal(0x1234_5678UL, rig.ReadU64(Rig.Data + 252) & 0xFFFF_FFFF);
        Assert.Equal(0xCAFE_F00D_1234_5678UL, rig.ReadU64(Rig.Data + 496));
    }

    [Theory]
    [InlineData(-2048)]
    [InlineData(2046)]
    [InlineData(-2)]
    public void CJumps(int offset)
    {
        using var rig = new Rig();
        ulong at = Rig.Base + 0x800;
        rig.M.Memory.Write(at, BitConverter.GetBytes(Rv.CJ(offset)));
        rig.M.SetPc(at);
        rig[Ra] = 5;
        rig.Step();
        Assert.Equal(at + (ulong)(long)offset, rig.M.Pc);
        Assert.Equal(5UL, rig[Ra]); // c.j does not link
    }

    [Theory]
    [InlineData(true, 0UL, true)]
    [InlineData(true, 1UL, false)]
    [InlineData(false, 0UL, false)]
    [InlineData(false, 0x8000_0000_0000_0000UL, true)]
    public void CBranches(bool beqz, ulong value, bool taken)
    {
        using var rig = new Rig();
        ulong at = Rig.Base + 0x200;
        rig.M.Memory.Write(at, BitConverter.GetBytes(beqz ? Rv.CBeqz(S0, -256) : Rv.CBnez(S0, 254)));
        rig.M.SetPc(at);
        rig[S0] = value;
        rig.Step();
        Assert.Equal(taken ? at + (ulong)(beqz ? -256L : 254L) : at + 2, rig.M.Pc);
    }

    [Fact]
    public void JrAndJalr()
    {
        using var rig = new Rig();
        rig.EmitC(Rv.CJalr(T0));
        rig.M.Memory.Write(Rig.Base + 0x40, BitConverter.GetBytes(Rv.CJr(Ra)));
        rig[T0] = Rig.Base + 0x40;
        rig.Step();
        Assert.Equal(Rig.Base + 0x40, rig.M.Pc);
        Assert.Equal(Rig.Base + 2, rig[Ra]); // link = pc + 2
        rig.Step();
        Assert.Equal(Rig.Base + 2, rig.M.Pc);
    }

    [Fact]
    public void JalrReadsTargetBeforeLinkingWhenRs1IsRa()
    {
        using var rig = One(Rv.CJalr(Ra), (Ra, Rig.Base + 0x80));
        Assert.Equal(Rig.Base + 0x80, rig.M.Pc);
        Assert.Equal(Rig.Base + 2, rig[Ra]);
    }

    [Fact]
    public void EbreakTrapsWithZeroTval()
    {
        using var rig = One(Rv.CEbreak);
        rig.AssertTrap(Cause.Breakpoint, Rig.Base, 0);
    }

    /// <summary>Hints (rd = x0) execute as no-ops.</summary>
    [Theory]
    [InlineData((ushort)0x0001)] // c.nop
    [InlineData((ushort)0x4001)] // c.li x0, 0
    [InlineData((ushort)0x8006)] // c.mv x0, x1
    [InlineData((ushort)0x9006)] // c.add x0, x1
    public void HintsAreNops(ushort insn)
    {
        using var rig = One(insn, (Ra, 7));
        AssertFallsThrough(rig);
        Assert.Equal(7UL, rig[Ra]);
    }

    /// <summary>Reserved encodings trap as illegal with mtval = the 16 instruction bits.</summary>
    [Theory]
    [InlineData((ushort)0x0000)] // all zeros (c.unimp)
    [InlineData((ushort)0x0004)] // c.addi4spn with nzuimm = 0
    [InlineData((ushort)0x2001)] // c.addiw with rd = x0 (RV64: this slot is not c.jal)
    [InlineData((ushort)0x6101)] // c.addi16sp with imm = 0
    [InlineData((ushort)0x6501)] // c.lui a0, 0
    [InlineData((ushort)0x4002)] // c.lwsp with rd = x0
    [InlineData((ushort)0x6002)] // c.ldsp with rd = x0
    [InlineData((ushort)0x8002)] // c.jr x0
    [InlineData((ushort)0x9C41)] // CA with bit12=1, funct2=2 (reserved)
    [InlineData((ushort)0x9C61)] // CA with bit12=1, funct2=3 (reserved)
    public void ReservedEncodingsAreIllegal(ushort insn)
    {
        using var rig = One(insn);
        rig.AssertTrap(Cause.IllegalInstruction, Rig.Base, insn);
    }

    [Fact]
    public void CAddiwIsNotCJalOnRv64()
    {
        using var rig = One(Rv.CAddiw(A0, 3), (A0, 0xFFFF_FFFF), (Ra, 9));
        AssertFallsThrough(rig);
        Assert.Equal(2UL, rig[A0]); // 0xFFFFFFFF + 3 truncated to 32 bits and sign-extended
        Assert.Equal(9UL, rig[Ra]);
    }

    [Fact]
    public void MixedLengthStreamAdvancesByInstructionLength()
    {
        using var rig = new Rig();
        rig.EmitC(Rv.CLi(A0, 1));
        rig.Emit(Rv.Addi(A0, A0, 2)); // 32-bit instruction at a 2-byte aligned address
        rig.EmitC(Rv.CAddi(A0, 4));
        rig.Step(3);
        Assert.Equal(7UL, rig[A0]);
        Assert.Equal(Rig.Base + 8, rig.M.Pc);
    }

    [Fact]
    public void WideInstructionStraddlingAPageBoundaryExecutes()
    {
        using var rig = new Rig();
        ulong at = Rig.Base + 0x2000 - 2;
        rig.M.Memory.Write(at, BitConverter.GetBytes(Rv.Addi(A0, Zero, 123)));
        rig.M.SetPc(at);
        rig.Step();
        Assert.Equal(123UL, rig[A0]);
        Assert.Equal(at + 4, rig.M.Pc);
    }
}
