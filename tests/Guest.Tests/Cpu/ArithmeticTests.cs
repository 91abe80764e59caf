using LiveMigration.Guest.Tests.Infra;
using static LiveMigration.Guest.Tests.Infra.X;

namespace LiveMigration.Guest.Tests.Cpu;

/// <summary>Register-register and register-immediate ALU ops, M extension and the W forms.</summary>
public class ArithmeticTests
{
    private const ulong Min64 = 0x8000_0000_0000_0000, Max64 = 0x7FFF_FFFF_FFFF_FFFF, All = ulong.MaxValue;

    private static ulong RunRR(string op, ulong a, ulong b)
    {
        using var rig = new Rig();
        rig.Emit(Rv.Op(op, A0, A1, A2));
        rig[A1] = a;
        rig[A2] = b;
        rig.Step();
        Assert.Equal(1UL, rig.M.Icount);
        Assert.Equal(Rig.Base + 4, rig.M.Pc);
        return rig[A0];
    }

    private static ulong RunRI(uint insn, ulong a)
    {
        using var rig = new Rig();
        rig.Emit(insn);
        rig[A1] = a;
        rig.Step();
        Assert.Equal(Rig.Base + 4, rig.M.Pc);
        return rig[A0];
    }

    public static TheoryData<string, ulong, ulong, ulong> RegReg => new()
    {
        { "add", All, 1, 0 }, { "add", Max64, 1, Min64 },
        { "sub", 0, 1, All }, { "sub", Min64, 1, Max64 },
        { "slt", All, 0, 1 }, { "slt", 0, All, 0 }, { "slt", Min64, Max64, 1 }, { "slt", 5, 5, 0 },
        { "sltu", All, 0, 0 }, { "sltu", 0, All, 1 }, { "sltu", Min64, Max64, 0 },
        { "xor", 0xF0F0, 0xFF00, 0x0FF0 }, { "or", 0xF0F0, 0xFF00, 0xFFF0 }, { "and", 0xF0F0, 0xFF00, 0xF000 },
        // 64-bit shifts use the low 6 bits of rs2.
        { "sll", 1, 63, Min64 }, { "sll", 1, 64, 1 }, { "sll", 1, 65, 2 }, { "sll", 3, 0xFFFF_FFC1, 6 },
        { "srl", Min64, 63, 1 }, { "srl", Min64, 64, Min64 }, { "srl", All, 0x7F, 1 },
        { "sra", Min64, 63, All }, { "sra", Min64, 64, Min64 }, { "sra", Min64, 1, 0xC000_0000_0000_0000 },
        // M extension, including the cases that must not trap.
        { "mul", All, All, 1 }, { "mul", Max64, 2, 0xFFFF_FFFF_FFFF_FFFE },
        { "mulh", All, All, 0 }, { "mulh", Min64, Min64, 0x4000_0000_0000_0000 }, { "mulh", Min64, 2, All },
        { "mulhu", All, All, 0xFFFF_FFFF_FFFF_FFFE }, { "mulhu", Min64, 2, 1 },
        { "mulhsu", All, All, All }, { "mulhsu", Min64, All, Min64 }, { "mulhsu", 2, All, 1 },
        { "div", 7, 0, All }, { "div", Min64, All, Min64 }, { "div", unchecked((ulong)-7L), 2, unchecked((ulong)-3L) }, { "div", 0, 0, All },
        { "divu", 7, 0, All }, { "divu", All, 2, Max64 }, { "divu", Min64, All, 0 },
        { "rem", 7, 0, 7 }, { "rem", Min64, All, 0 }, { "rem", unchecked((ulong)-7L), 2, All }, { "rem", 7, unchecked((ulong)-2L), 1 },
        { "remu", 7, 0, 7 }, { "remu", All, 10, 5 }, { "remu", Min64, All, Min64 },
        // W forms: operate on the low 32 bits and sign-extend the 32-bit result.
        { "addw", 0x7FFF_FFFF, 1, 0xFFFF_FFFF_8000_0000 }, { "addw", 0xFFFF_FFFF_0000_0001, 0x1_0000_0000, 1 },
        { "subw", 0, 1, All }, { "subw", 0x8000_0000, 1, 0x7FFF_FFFF },
        { "sllw", 1, 31, 0xFFFF_FFFF_8000_0000 }, { "sllw", 1, 32, 1 }, { "sllw", 1, 63, 0xFFFF_FFFF_8000_0000 },
        { "srlw", 0xFFFF_FFFF_8000_0000, 31, 1 }, { "srlw", 0x8000_0000, 32, 0xFFFF_FFFF_8000_0000 }, { "srlw", 0xF_8000_0000, 0, 0xFFFF_FFFF_8000_0000 },
        { "sraw", 0x8000_0000, 31, All }, { "sraw", 0x8000_0000, 33, 0xFFFF_FFFF_C000_0000 }, { "sraw", 0x1_7FFF_FFFF, 0, 0x7FFF_FFFF },
        { "mulw", 0x10000, 0x8000, 0xFFFF_FFFF_8000_0000 }, { "mulw", 0x1_0000_0003, 0x1_0000_0005, 15 },
        { "divw", 7, 0, All }, { "divw", 0x8000_0000, All, 0xFFFF_FFFF_8000_0000 }, { "divw", 0x1_0000_0010, 0xFFFF_FFFE, 0xFFFF_FFFF_FFFF_FFF8 },
        { "divuw", 7, 0, All }, { "divuw", 0xFFFF_FFFF, 1, All }, { "divuw", 0x1_8000_0000, 0x1_0000_0001, 0xFFFF_FFFF_8000_0000 },
        { "remw", 7, 0, 7 }, { "remw", 0xFFFF_FFFF_8000_0000, 0, 0xFFFF_FFFF_8000_0000 }, { "remw", 0x8000_0000, All, 0 },
        { "remw", 0x8000_0000, 0, 0xFFFF_FFFF_8000_0000 }, { "remw", unchecked((ulong)-7L), 2, All },
        { "remuw", 7, 0, 7 }, { "remuw", 0x8000_0005, 0, 0xFFFF_FFFF_8000_0005 }, { "remuw", 0x1_8000_0005, 0x8000_0000, 5 },
    };

    [Theory, MemberData(nameof(RegReg))]
    public void RegisterRegister(string op, ulong a, ulong b, ulong expected)
        => Assert.Equal(expected.ToString("x16"), RunRR(op, a, b).ToString("x16"));

    public static TheoryData<string, uint, ulong, ulong> RegImm => new()
    {
        { "addi -1", Rv.Addi(A0, A1, -1), 0, All },
        { "addi -2048", Rv.Addi(A0, A1, -2048), 0, unchecked((ulong)-2048L) },
        { "slti", Rv.Slti(A0, A1, -1), Min64, 1 },
        { "slti equal", Rv.Slti(A0, A1, -1), All, 0 },
        { "sltiu -1 is max", Rv.Sltiu(A0, A1, -1), 0xFFFF_FFFF_FFFF_FFFE, 1 },
        { "sltiu seqz", Rv.Sltiu(A0, A1, 1), 0, 1 },
        { "xori not", Rv.Xori(A0, A1, -1), 0x1234, ~0x1234UL },
        { "ori sign-extended", Rv.Ori(A0, A1, -2048), 1, 0xFFFF_FFFF_FFFF_F801 },
        { "andi sign-extended", Rv.Andi(A0, A1, -16), All, 0xFFFF_FFFF_FFFF_FFF0 },
        { "slli 63", Rv.Slli(A0, A1, 63), 1, Min64 },
        { "srli 63", Rv.Srli(A0, A1, 63), Min64, 1 },
        { "srai 63", Rv.Srai(A0, A1, 63), Min64, All },
        { "srai 0", Rv.Srai(A0, A1, 0), Min64, Min64 },
        { "addiw overflow", Rv.Addiw(A0, A1, 1), 0x7FFF_FFFF, 0xFFFF_FFFF_8000_0000 },
        { "addiw 0 is sext.w", Rv.Addiw(A0, A1, 0), 0x1234_5678_8000_0000, 0xFFFF_FFFF_8000_0000 },
        { "slliw 31", Rv.Slliw(A0, A1, 31), 1, 0xFFFF_FFFF_8000_0000 },
        { "srliw 0 sign-extends", Rv.Srliw(A0, A1, 0), 0x8000_0000, 0xFFFF_FFFF_8000_0000 },
        { "srliw 31", Rv.Srliw(A0, A1, 31), 0xFFFF_FFFF, 1 },
        { "sraiw 31", Rv.Sraiw(A0, A1, 31), 0x8000_0000, All },
        { "sraiw ignores upper", Rv.Sraiw(A0, A1, 4), 0xFFFF_FFFF_0000_0100, 0x10 },
    };

    [Theory, MemberData(nameof(RegImm))]
    public void RegisterImmediate(string name, uint insn, ulong a, ulong expected)
    {
        _ = name;
        Assert.Equal(expected.ToString("x16"), RunRI(insn, a).ToString("x16"));
    }

    [Theory]
    [InlineData(0x80000000u, 0xFFFF_FFFF_8000_0000UL)]
    [InlineData(0x7FFFF000u, 0x7FFF_F000UL)]
    [InlineData(0xFFFFF000u, 0xFFFF_FFFF_FFFF_F000UL)]
    public void LuiSignExtends(uint imm, ulong expected)
        => Assert.Equal(expected, RunRI(Rv.Lui(A0, unchecked((int)imm)), 0));

    [Fact]
    public void AuipcAddsSignExtendedUpperImmediateToPc()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Nop, Rv.Auipc(A0, unchecked((int)0x80000000)), Rv.Auipc(A1, 0x1000), Rv.Auipc(A2, 0));
        rig.Step(4);
        Assert.Equal(Rig.Base + 4 - 0x8000_0000UL, rig[A0]); // pc + sext(0x80000000) wraps below RAM
        Assert.Equal(Rig.Base + 8 + 0x1000, rig[A1]);
        Assert.Equal(Rig.Base + 12, rig[A2]);
    }

    [Fact]
    public void WritesToX0AreDiscarded()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Addi(Zero, Zero, 5), Rv.Lui(Zero, 0x1000), Rv.Op("add", A0, Zero, Zero), Rv.Jal(Zero, 8), Rv.Nop, Rv.Addi(A1, Zero, 1));
        rig[A0] = 99;
        rig.Step(5);
        Assert.Equal(0UL, rig[Zero]);
        Assert.Equal(0UL, rig[A0]);
        Assert.Equal(1UL, rig[A1]);
    }
}
