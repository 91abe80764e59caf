namespace LiveMigration.Guest.Tests.Infra;

/// <summary>F and D encodings, from the ISA manual's tables (independent of the decoder under test).</summary>
public static class RvFp
{
    public const int Rne = 0, Rtz = 1, Rdn = 2, Rup = 3, Rmm = 4, Dyn = 7;
    public const uint Fflags = 0x001, Frm = 0x002, Fcsr = 0x003;

    public static uint Flw(int rd, int rs1, long off) => Rv.I(off, rs1, 2, rd, 0x07);
    public static uint Fld(int rd, int rs1, long off) => Rv.I(off, rs1, 3, rd, 0x07);
    public static uint Fsw(int rs2, int rs1, long off) => Rv.S(off, rs2, rs1, 2, 0x27);
    public static uint Fsd(int rs2, int rs1, long off) => Rv.S(off, rs2, rs1, 3, 0x27);

    /// <summary>OP-FP with funct7, rs2 (or its selector) and funct3 (rm or a selector).</summary>
    public static uint Op(uint f7, int rd, int rs1, int rs2, int f3) => Rv.R(f7, rs2, rs1, (uint)f3, rd, 0x53);

    /// <summary>fmadd (0x43), fmsub (0x47), fnmsub (0x4B), fnmadd (0x4F); fmt 0 = S, 1 = D.</summary>
    public static uint Fma(uint opcode, int fmt, int rd, int rs1, int rs2, int rs3, int rm)
        => ((uint)rs3 << 27) | ((uint)fmt << 25) | ((uint)rs2 << 20) | ((uint)rs1 << 15) | ((uint)rm << 12) | ((uint)rd << 7) | opcode;

    public static readonly uint[] FmaOpcodes = [0x43, 0x47, 0x4B, 0x4F];

    public static uint FaddD(int rd, int rs1, int rs2, int rm = Dyn) => Op(0x01, rd, rs1, rs2, rm);
    public static uint FaddS(int rd, int rs1, int rs2, int rm = Dyn) => Op(0x00, rd, rs1, rs2, rm);
    public static uint FmvXD(int rd, int rs1) => Op(0x71, rd, rs1, 0, 0);
    public static uint FmvDX(int rd, int rs1) => Op(0x79, rd, rs1, 0, 0);
    public static uint FmvXW(int rd, int rs1) => Op(0x70, rd, rs1, 0, 0);
    public static uint FmvWX(int rd, int rs1) => Op(0x78, rd, rs1, 0, 0);

    // C.FLD / C.FSD (quadrant 0) and C.FLDSP / C.FSDSP (quadrant 2) share the C.LD/C.SD layouts with funct3 1 and 5.
    public static ushort CFld(int rdp, int rs1p, uint off) => (ushort)((Rv.CLd(rdp, rs1p, off) & ~(7u << 13)) | (1u << 13));
    public static ushort CFsd(int rs2p, int rs1p, uint off) => (ushort)((Rv.CLd(rs2p, rs1p, off) & ~(7u << 13)) | (5u << 13));
    public static ushort CFldsp(int rd, uint off) => (ushort)((Rv.CLdsp(rd, off) & ~(7u << 13)) | (1u << 13));
    public static ushort CFsdsp(int rs2, uint off) => (ushort)((Rv.CSdsp(rs2, off) & ~(7u << 13)) | (5u << 13));
}
