using static LiveMigration.Guest.Tests.Infra.X;

namespace LiveMigration.Guest.Tests.Infra;

/// <summary>
/// Pins the test encoder to reference encodings (taken once from GNU as 2.40), so a wrong encoder
/// cannot make a decoder bug look like a pass.
/// </summary>
public class RvEncoderTests
{
    public static TheoryData<uint, uint> Wide => new()
    {
        { Rv.Lui(A0, unchecked((int)0xfffff000)), 0xfffff537 },
        { Rv.Auipc(T0, unchecked((int)0x80000000)), 0x80000297 },
        { Rv.Jalr(A1, T2, -4), 0xffc385e7 },
        { Rv.Jal(Ra, -2048), 0x801ff0ef },
        { Rv.Jal(Zero, 0xffffe), 0x7ffff06f },
        { Rv.Beq(A0, A1, -4096), 0x80b50063 },
        { Rv.Bgeu(T0, T1, 4094), 0x7e62ffe3 },
        { Rv.Blt(A2, A3, 16), 0x00d64863 },
        { Rv.Lb(A0, A1, -1), 0xfff58503 },
        { Rv.Lwu(A2, A3, 2047), 0x7ff6e603 },
        { Rv.Sd(T1, Sp, -2048), 0x80613023 },
        { Rv.Sb(A5, A0, 5), 0x00f502a3 },
        { Rv.Addi(A0, A1, -1), 0xfff58513 },
        { Rv.Srai(A0, A1, 63), 0x43f5d513 },
        { Rv.Sraiw(A0, A1, 31), 0x41f5d51b },
        { Rv.Srliw(A0, A1, 1), 0x0015d51b },
        { Rv.Op("sub", A0, A1, A2), 0x40c58533 },
        { Rv.Op("mulhsu", A3, A4, A5), 0x02f726b3 },
        { Rv.Op("remuw", T0, T1, T2), 0x027372bb },
        { Rv.Op("sraw", S0, S1, A0), 0x40a4d43b },
        { Rv.Csrrw(A0, 0x340, A1), 0x34059573 },
        { Rv.Csrrci(Zero, 0x300, 8), 0x30047073 },
        { Rv.Csrrsi(A0, 0x304, 31), 0x304fe573 },
        { Rv.Amo(Rv.AmoFunct5["swap"], false, A0, A2, A1), 0x08b6252f },
        { Rv.Amo(Rv.AmoFunct5["maxu"], true, T0, T2, T1), 0xe063b2af },
        { Rv.Amo(Rv.AmoFunct5["min"], false, A0, A2, A1), 0x80b6252f },
        { Rv.LrD(A0, A1), 0x1005b52f },
        { Rv.ScW(A2, A4, A3), 0x18d7262f },
    };

    [Theory, MemberData(nameof(Wide))]
    public void Encodes32(uint actual, uint expected) => Assert.Equal(expected.ToString("x8"), actual.ToString("x8"));

    public static TheoryData<ushort, ushort> Compressed => new()
    {
        { Rv.CAddi4spn(S0, 1020), 0x1fe0 }, { Rv.CAddi4spn(A5, 4), 0x005c },
        { Rv.CLw(A0, A1, 124), 0x5de8 }, { Rv.CLd(S1, A5, 248), 0x7fe4 },
        { Rv.CSw(A0, S0, 64), 0xc028 }, { Rv.CSd(A4, A3, 8), 0xe698 },
        { Rv.CAddi(A0, -32), 0x1501 }, { Rv.CAddiw(A1, 31), 0x25fd }, { Rv.CLi(T0, -1), 0x52fd },
        { Rv.CAddi16sp(-512), 0x7101 }, { Rv.CAddi16sp(496), 0x617d },
        { Rv.CLui(A0, -32), 0x7501 }, { Rv.CLui(T1, 0x1f), 0x637d },
        { Rv.CSrli(A0, 63), 0x917d }, { Rv.CSrai(S1, 1), 0x8485 }, { Rv.CAndi(A2, -16), 0x9a41 },
        { Rv.CArith("sub", S0, S1), 0x8c05 }, { Rv.CArith("xor", A0, A5), 0x8d3d },
        { Rv.CArith("or", A1, A2), 0x8dd1 }, { Rv.CArith("and", A3, A4), 0x8ef9 },
        { Rv.CArith("subw", A4, A5), 0x9f1d }, { Rv.CArith("addw", S0, A0), 0x9c29 },
        { Rv.CJ(-2048), 0xb001 }, { Rv.CJ(2046), 0xaffd },
        { Rv.CBeqz(A0, -256), 0xd101 }, { Rv.CBnez(S1, 254), 0xecfd },
        { Rv.CSlli(T0, 33), 0x1286 }, { Rv.CLwsp(Ra, 252), 0x50fe }, { Rv.CLdsp(S0, 504), 0x747e },
        { Rv.CJr(T0), 0x8282 }, { Rv.CMv(A0, S1), 0x8526 }, { Rv.CEbreak, 0x9002 },
        { Rv.CJalr(A2), 0x9602 }, { Rv.CAdd(T1, T2), 0x931e },
        { Rv.CSwsp(Ra, 252), 0xdf86 }, { Rv.CSdsp(S0, 504), 0xffa2 },
    };

    [Theory, MemberData(nameof(Compressed))]
    public void Encodes16(ushort actual, ushort expected) => Assert.Equal(expected.ToString("x4"), actual.ToString("x4"));
}
