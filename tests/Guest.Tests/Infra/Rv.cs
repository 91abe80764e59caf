namespace LiveMigration.Guest.Tests.Infra;

/// <summary>
/// A tiny RISC-V encoder, written from the ISA manual's format tables so instruction tests do not
/// need the cross-compiler (and do not share code with the decoder they check).
/// </summary>
public static class Rv
{
    // ---- 32-bit formats ----
    public static uint R(uint f7, int rs2, int rs1, uint f3, int rd, uint opc)
        => (f7 << 25) | ((uint)rs2 << 20) | ((uint)rs1 << 15) | (f3 << 12) | ((uint)rd << 7) | opc;

    public static uint I(long imm, int rs1, uint f3, int rd, uint opc)
        => (((uint)imm & 0xFFF) << 20) | ((uint)rs1 << 15) | (f3 << 12) | ((uint)rd << 7) | opc;

    public static uint S(long imm, int rs2, int rs1, uint f3, uint opc)
    {
        uint i = (uint)imm & 0xFFF;
        return ((i >> 5) << 25) | ((uint)rs2 << 20) | ((uint)rs1 << 15) | (f3 << 12) | ((i & 31) << 7) | opc;
    }

    public static uint B(long imm, int rs2, int rs1, uint f3, uint opc)
    {
        uint i = (uint)imm & 0x1FFE;
        return (((i >> 12) & 1) << 31) | (((i >> 5) & 0x3F) << 25) | ((uint)rs2 << 20) | ((uint)rs1 << 15)
             | (f3 << 12) | (((i >> 1) & 0xF) << 8) | (((i >> 11) & 1) << 7) | opc;
    }

    public static uint U(long imm, int rd, uint opc) => ((uint)imm & 0xFFFFF000) | ((uint)rd << 7) | opc;

    public static uint J(long imm, int rd, uint opc)
    {
        uint i = (uint)imm & 0x1FFFFE;
        return (((i >> 20) & 1) << 31) | (((i >> 1) & 0x3FF) << 21) | (((i >> 11) & 1) << 20) | (((i >> 12) & 0xFF) << 12)
             | ((uint)rd << 7) | opc;
    }

    // ---- RV64I ----
    public static uint Lui(int rd, long imm) => U(imm, rd, 0x37);
    public static uint Auipc(int rd, long imm) => U(imm, rd, 0x17);
    public static uint Jal(int rd, long off) => J(off, rd, 0x6F);
    public static uint Jalr(int rd, int rs1, long off) => I(off, rs1, 0, rd, 0x67);
    public static uint Beq(int a, int b, long off) => B(off, b, a, 0, 0x63);
    public static uint Bne(int a, int b, long off) => B(off, b, a, 1, 0x63);
    public static uint Blt(int a, int b, long off) => B(off, b, a, 4, 0x63);
    public static uint Bge(int a, int b, long off) => B(off, b, a, 5, 0x63);
    public static uint Bltu(int a, int b, long off) => B(off, b, a, 6, 0x63);
    public static uint Bgeu(int a, int b, long off) => B(off, b, a, 7, 0x63);

    public static uint Lb(int rd, int rs1, long off) => I(off, rs1, 0, rd, 0x03);
    public static uint Lh(int rd, int rs1, long off) => I(off, rs1, 1, rd, 0x03);
    public static uint Lw(int rd, int rs1, long off) => I(off, rs1, 2, rd, 0x03);
    public static uint Ld(int rd, int rs1, long off) => I(off, rs1, 3, rd, 0x03);
    public static uint Lbu(int rd, int rs1, long off) => I(off, rs1, 4, rd, 0x03);
    public static uint Lhu(int rd, int rs1, long off) => I(off, rs1, 5, rd, 0x03);
    public static uint Lwu(int rd, int rs1, long off) => I(off, rs1, 6, rd, 0x03);
    public static uint Sb(int rs2, int rs1, long off) => S(off, rs2, rs1, 0, 0x23);
    public static uint Sh(int rs2, int rs1, long off) => S(off, rs2, rs1, 1, 0x23);
    public static uint Sw(int rs2, int rs1, long off) => S(off, rs2, rs1, 2, 0x23);
    public static uint Sd(int rs2, int rs1, long off) => S(off, rs2, rs1, 3, 0x23);

    public static uint Addi(int rd, int rs1, long imm) => I(imm, rs1, 0, rd, 0x13);
    public static uint Slti(int rd, int rs1, long imm) => I(imm, rs1, 2, rd, 0x13);
    public static uint Sltiu(int rd, int rs1, long imm) => I(imm, rs1, 3, rd, 0x13);
    public static uint Xori(int rd, int rs1, long imm) => I(imm, rs1, 4, rd, 0x13);
    public static uint Ori(int rd, int rs1, long imm) => I(imm, rs1, 6, rd, 0x13);
    public static uint Andi(int rd, int rs1, long imm) => I(imm, rs1, 7, rd, 0x13);
    public static uint Slli(int rd, int rs1, int sh) => I(sh, rs1, 1, rd, 0x13);
    public static uint Srli(int rd, int rs1, int sh) => I(sh, rs1, 5, rd, 0x13);
    public static uint Srai(int rd, int rs1, int sh) => I(0x400 | sh, rs1, 5, rd, 0x13);
    public static uint Addiw(int rd, int rs1, long imm) => I(imm, rs1, 0, rd, 0x1B);
    public static uint Slliw(int rd, int rs1, int sh) => I(sh, rs1, 1, rd, 0x1B);
    public static uint Srliw(int rd, int rs1, int sh) => I(sh, rs1, 5, rd, 0x1B);
    public static uint Sraiw(int rd, int rs1, int sh) => I(0x400 | sh, rs1, 5, rd, 0x1B);

    /// <summary>OP (0x33) and OP-32 (0x3B) register-register forms by mnemonic.</summary>
    public static uint Op(string name, int rd, int rs1, int rs2) => name switch
    {
        "add" => R(0, rs2, rs1, 0, rd, 0x33), "sub" => R(0x20, rs2, rs1, 0, rd, 0x33),
        "sll" => R(0, rs2, rs1, 1, rd, 0x33), "slt" => R(0, rs2, rs1, 2, rd, 0x33),
        "sltu" => R(0, rs2, rs1, 3, rd, 0x33), "xor" => R(0, rs2, rs1, 4, rd, 0x33),
        "srl" => R(0, rs2, rs1, 5, rd, 0x33), "sra" => R(0x20, rs2, rs1, 5, rd, 0x33),
        "or" => R(0, rs2, rs1, 6, rd, 0x33), "and" => R(0, rs2, rs1, 7, rd, 0x33),
        "mul" => R(1, rs2, rs1, 0, rd, 0x33), "mulh" => R(1, rs2, rs1, 1, rd, 0x33),
        "mulhsu" => R(1, rs2, rs1, 2, rd, 0x33), "mulhu" => R(1, rs2, rs1, 3, rd, 0x33),
        "div" => R(1, rs2, rs1, 4, rd, 0x33), "divu" => R(1, rs2, rs1, 5, rd, 0x33),
        "rem" => R(1, rs2, rs1, 6, rd, 0x33), "remu" => R(1, rs2, rs1, 7, rd, 0x33),
        "addw" => R(0, rs2, rs1, 0, rd, 0x3B), "subw" => R(0x20, rs2, rs1, 0, rd, 0x3B),
        "sllw" => R(0, rs2, rs1, 1, rd, 0x3B), "srlw" => R(0, rs2, rs1, 5, rd, 0x3B),
        "sraw" => R(0x20, rs2, rs1, 5, rd, 0x3B), "mulw" => R(1, rs2, rs1, 0, rd, 0x3B),
        "divw" => R(1, rs2, rs1, 4, rd, 0x3B), "divuw" => R(1, rs2, rs1, 5, rd, 0x3B),
        "remw" => R(1, rs2, rs1, 6, rd, 0x3B), "remuw" => R(1, rs2, rs1, 7, rd, 0x3B),
        _ => throw new ArgumentException(name),
    };

    public const uint Fence = 0x0FF0000F;
    public const uint FenceI = 0x0000100F;
    public const uint Ecall = 0x00000073;
    public const uint Ebreak = 0x00100073;
    public const uint Mret = 0x30200073;
    public const uint Wfi = 0x10500073;
    public const uint Nop = 0x00000013;

    // ---- Zicsr ----
    public static uint Csrrw(int rd, uint csr, int rs1) => I(csr, rs1, 1, rd, 0x73);
    public static uint Csrrs(int rd, uint csr, int rs1) => I(csr, rs1, 2, rd, 0x73);
    public static uint Csrrc(int rd, uint csr, int rs1) => I(csr, rs1, 3, rd, 0x73);
    public static uint Csrrwi(int rd, uint csr, int uimm) => I(csr, uimm, 5, rd, 0x73);
    public static uint Csrrsi(int rd, uint csr, int uimm) => I(csr, uimm, 6, rd, 0x73);
    public static uint Csrrci(int rd, uint csr, int uimm) => I(csr, uimm, 7, rd, 0x73);
    public static uint Csrr(int rd, uint csr) => Csrrs(rd, csr, 0);
    public static uint Csrw(uint csr, int rs1) => Csrrw(0, csr, rs1);

    // ---- A ----
    public static uint Amo(uint funct5, bool dword, int rd, int rs1, int rs2)
        => R(funct5 << 2, rs2, rs1, dword ? 3u : 2u, rd, 0x2F);
    public static uint LrW(int rd, int rs1) => Amo(0x02, false, rd, rs1, 0);
    public static uint LrD(int rd, int rs1) => Amo(0x02, true, rd, rs1, 0);
    public static uint ScW(int rd, int rs1, int rs2) => Amo(0x03, false, rd, rs1, rs2);
    public static uint ScD(int rd, int rs1, int rs2) => Amo(0x03, true, rd, rs1, rs2);
    public static readonly IReadOnlyDictionary<string, uint> AmoFunct5 = new Dictionary<string, uint>
    {
        ["swap"] = 0x01, ["add"] = 0x00, ["xor"] = 0x04, ["and"] = 0x0C, ["or"] = 0x08,
        ["min"] = 0x10, ["max"] = 0x14, ["minu"] = 0x18, ["maxu"] = 0x1C,
    };

    // ---- C (16-bit), register arguments are full numbers; primes must be x8..x15 ----
    private static uint P(int r)
    {
        if (r is < 8 or > 15) throw new ArgumentException($"x{r} is not a compressed register");
        return (uint)(r - 8);
    }

    private static ushort CI(uint f3, uint bit12, int rd, uint low5, uint op)
        => (ushort)((f3 << 13) | (bit12 << 12) | ((uint)rd << 7) | (low5 << 2) | op);

    public static ushort CAddi4spn(int rdp, uint nzuimm)
        => (ushort)((((nzuimm >> 4) & 3) << 11) | (((nzuimm >> 6) & 0xF) << 7) | (((nzuimm >> 2) & 1) << 6)
                    | (((nzuimm >> 3) & 1) << 5) | (P(rdp) << 2));
    public static ushort CLw(int rdp, int rs1p, uint off)
        => (ushort)((2u << 13) | (((off >> 3) & 7) << 10) | (P(rs1p) << 7) | (((off >> 2) & 1) << 6) | (((off >> 6) & 1) << 5) | (P(rdp) << 2));
    public static ushort CLd(int rdp, int rs1p, uint off)
        => (ushort)((3u << 13) | (((off >> 3) & 7) << 10) | (P(rs1p) << 7) | (((off >> 6) & 3) << 5) | (P(rdp) << 2));
    public static ushort CSw(int rs2p, int rs1p, uint off) => (ushort)(CLw(rs2p, rs1p, off) | (4u << 13));
    public static ushort CSd(int rs2p, int rs1p, uint off) => (ushort)(CLd(rs2p, rs1p, off) | (4u << 13));

    public static ushort CAddi(int rd, long imm) => CI(0, ((uint)imm >> 5) & 1, rd, (uint)imm & 31, 1);
    public static ushort CAddiw(int rd, long imm) => CI(1, ((uint)imm >> 5) & 1, rd, (uint)imm & 31, 1);
    public static ushort CLi(int rd, long imm) => CI(2, ((uint)imm >> 5) & 1, rd, (uint)imm & 31, 1);
    public static ushort CAddi16sp(long imm)
    {
        uint i = (uint)imm;
        uint low = (((i >> 4) & 1) << 4) | (((i >> 6) & 1) << 3) | (((i >> 7) & 3) << 1) | ((i >> 5) & 1);
        return CI(3, (i >> 9) & 1, 2, low, 1);
    }
    /// <summary>c.lui rd, imm where imm is the 6-bit signed value placed at bits 17:12.</summary>
    public static ushort CLui(int rd, long imm6) => CI(3, ((uint)imm6 >> 5) & 1, rd, (uint)imm6 & 31, 1);
    public static ushort CSrli(int rdp, int sh) => (ushort)((4u << 13) | ((uint)(sh >> 5) << 12) | (0u << 10) | (P(rdp) << 7) | (((uint)sh & 31) << 2) | 1);
    public static ushort CSrai(int rdp, int sh) => (ushort)((4u << 13) | ((uint)(sh >> 5) << 12) | (1u << 10) | (P(rdp) << 7) | (((uint)sh & 31) << 2) | 1);
    public static ushort CAndi(int rdp, long imm) => (ushort)((4u << 13) | ((((uint)imm >> 5) & 1) << 12) | (2u << 10) | (P(rdp) << 7) | (((uint)imm & 31) << 2) | 1);
    /// <summary>CA format: sub/xor/or/and (bit12 = 0) and subw/addw (bit12 = 1).</summary>
    public static ushort CArith(string name, int rdp, int rs2p)
    {
        (uint b12, uint f2) = name switch
        {
            "sub" => (0u, 0u), "xor" => (0u, 1u), "or" => (0u, 2u), "and" => (0u, 3u),
            "subw" => (1u, 0u), "addw" => (1u, 1u),
            _ => throw new ArgumentException(name),
        };
        return (ushort)((4u << 13) | (b12 << 12) | (3u << 10) | (P(rdp) << 7) | (f2 << 5) | (P(rs2p) << 2) | 1);
    }
    public static ushort CJ(long off)
    {
        uint i = (uint)off;
        uint f = (((i >> 11) & 1) << 10) | (((i >> 4) & 1) << 9) | (((i >> 8) & 3) << 7) | (((i >> 10) & 1) << 6)
               | (((i >> 6) & 1) << 5) | (((i >> 7) & 1) << 4) | (((i >> 1) & 7) << 1) | ((i >> 5) & 1);
        return (ushort)((5u << 13) | (f << 2) | 1);
    }
    private static ushort CB(uint f3, int rs1p, long off)
    {
        uint i = (uint)off;
        return (ushort)((f3 << 13) | (((i >> 8) & 1) << 12) | (((i >> 3) & 3) << 10) | (P(rs1p) << 7)
                        | (((i >> 6) & 3) << 5) | (((i >> 1) & 3) << 3) | (((i >> 5) & 1) << 2) | 1);
    }
    public static ushort CBeqz(int rs1p, long off) => CB(6, rs1p, off);
    public static ushort CBnez(int rs1p, long off) => CB(7, rs1p, off);
    public static ushort CSlli(int rd, int sh) => CI(0, (uint)sh >> 5, rd, (uint)sh & 31, 2);
    public static ushort CLwsp(int rd, uint off) => CI(2, (off >> 5) & 1, rd, (((off >> 2) & 7) << 2) | ((off >> 6) & 3), 2);
    public static ushort CLdsp(int rd, uint off) => CI(3, (off >> 5) & 1, rd, (((off >> 3) & 3) << 3) | ((off >> 6) & 7), 2);
    public static ushort CJr(int rs1) => (ushort)((4u << 13) | ((uint)rs1 << 7) | 2);
    public static ushort CMv(int rd, int rs2) => (ushort)((4u << 13) | ((uint)rd << 7) | ((uint)rs2 << 2) | 2);
    public static ushort CEbreak => (ushort)((4u << 13) | (1u << 12) | 2);
    public static ushort CJalr(int rs1) => (ushort)((4u << 13) | (1u << 12) | ((uint)rs1 << 7) | 2);
    public static ushort CAdd(int rd, int rs2) => (ushort)((4u << 13) | (1u << 12) | ((uint)rd << 7) | ((uint)rs2 << 2) | 2);
    public static ushort CSwsp(int rs2, uint off) => (ushort)((6u << 13) | (((off >> 2) & 0xF) << 9) | (((off >> 6) & 3) << 7) | ((uint)rs2 << 2) | 2);
    public static ushort CSdsp(int rs2, uint off) => (ushort)((7u << 13) | (((off >> 3) & 7) << 10) | (((off >> 6) & 7) << 7) | ((uint)rs2 << 2) | 2);
    public const ushort CNop = 0x0001;
}
