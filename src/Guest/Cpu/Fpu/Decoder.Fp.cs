namespace LiveMigration.Guest.Cpu;

/// <summary>
/// F and D decoding. f registers are real in every slot (f0 is not zero), so ops that write an f
/// register keep rd as is; ops that write an x register use the x0 sink like the integer ops.
/// A static rounding mode of 5 or 6 is illegal here; 7 (dynamic) is checked against frm at execution.
/// </summary>
public static partial class Decoder
{
    /// <summary>Imm for FP ops: rm in bits 0..2, rs3 in bits 8..12.</summary>
    public const int Rs3Shift = 8;

    private static DecodedInsn MakeFp(Op op, int rd, int rs1, int rs2, long imm, int length)
        => new() { Op = op, Rd = (byte)rd, Rs1 = (byte)rs1, Rs2 = (byte)rs2, Imm = imm, Length = (byte)length };

    private static Op Nth(Op first, int n) => (Op)((int)first + n);

    private static bool WritesX(Op op) => op >= Op.FeqS;

    private static DecodedInsn DecodeFp(uint b)
    {
        int rd = (int)(b >> 7) & 31, rs1 = (int)(b >> 15) & 31, rs2 = (int)(b >> 20) & 31;
        uint f3 = (b >> 12) & 7, f7 = b >> 25;
        switch (b & 0x7F)
        {
            case 0x07:
                return f3 switch
                {
                    2 => MakeFp(Op.Flw, rd, rs1, 0, (int)b >> 20, 4),
                    3 => MakeFp(Op.Fld, rd, rs1, 0, (int)b >> 20, 4),
                    _ => Illegal(b, 4),
                };
            case 0x27:
                {
                    long imm = ((int)b >> 25 << 5) | rd;
                    return f3 switch
                    {
                        2 => MakeFp(Op.Fsw, 0, rs1, rs2, imm, 4),
                        3 => MakeFp(Op.Fsd, 0, rs1, rs2, imm, 4),
                        _ => Illegal(b, 4),
                    };
                }
            case 0x53:
                {
                    Op op = DecodeOpFp(f7, f3, rs2);
                    if (op == Op.Illegal) return Illegal(b, 4);
                    if (!HasRoundingMode(f7)) f3 = 0;
                    else if (f3 is 5 or 6) return Illegal(b, 4);
                    return WritesX(op) ? Make(op, rd, rs1, rs2, f3, 4) : MakeFp(op, rd, rs1, rs2, f3, 4);
                }
            default: // fused multiply-add: opcode picks the sign variant, bits 25..26 the format
                {
                    uint fmt = (b >> 25) & 3;
                    if (fmt > 1 || f3 is 5 or 6) return Illegal(b, 4);
                    int variant = (int)((b >> 2) & 3); // 0x43 madd, 0x47 msub, 0x4B nmsub, 0x4F nmadd
                    Op op = Nth(fmt == 0 ? Op.FmaddS : Op.FmaddD, variant);
                    return MakeFp(op, rd, rs1, rs2, f3 | ((long)(b >> 27) << Rs3Shift), 4);
                }
        }
    }

    /// <summary>funct7 values whose funct3 is a rounding mode (arithmetic and conversions).</summary>
    private static bool HasRoundingMode(uint f7) => f7 is <= 0x0D or 0x2C or 0x2D or 0x20 or 0x21 or 0x60 or 0x61 or 0x68 or 0x69;

    private static Op DecodeOpFp(uint f7, uint f3, int rs2) => f7 switch
    {
        0x00 => Op.FaddS, 0x04 => Op.FsubS, 0x08 => Op.FmulS, 0x0C => Op.FdivS,
        0x01 => Op.FaddD, 0x05 => Op.FsubD, 0x09 => Op.FmulD, 0x0D => Op.FdivD,
        0x2C when rs2 == 0 => Op.FsqrtS,
        0x2D when rs2 == 0 => Op.FsqrtD,
        0x10 when f3 <= 2 => Nth(Op.FsgnjS, (int)f3),
        0x11 when f3 <= 2 => Nth(Op.FsgnjD, (int)f3),
        0x14 when f3 <= 1 => Nth(Op.FminS, (int)f3),
        0x15 when f3 <= 1 => Nth(Op.FminD, (int)f3),
        0x20 when rs2 == 1 => Op.FcvtSD,
        0x21 when rs2 == 0 => Op.FcvtDS,
        0x50 => f3 switch { 0 => Op.FleS, 1 => Op.FltS, 2 => Op.FeqS, _ => Op.Illegal },
        0x51 => f3 switch { 0 => Op.FleD, 1 => Op.FltD, 2 => Op.FeqD, _ => Op.Illegal },
        0x60 when rs2 <= 3 => Nth(Op.FcvtWS, rs2),
        0x61 when rs2 <= 3 => Nth(Op.FcvtWD, rs2),
        0x68 when rs2 <= 3 => Nth(Op.FcvtSW, rs2),
        0x69 when rs2 <= 3 => Nth(Op.FcvtDW, rs2),
        0x70 when rs2 == 0 && f3 == 0 => Op.FmvXW,
        0x70 when rs2 == 0 && f3 == 1 => Op.FclassS,
        0x71 when rs2 == 0 && f3 == 0 => Op.FmvXD,
        0x71 when rs2 == 0 && f3 == 1 => Op.FclassD,
        0x78 when rs2 == 0 && f3 == 0 => Op.FmvWX,
        0x79 when rs2 == 0 && f3 == 0 => Op.FmvDX,
        _ => Op.Illegal,
    };
}
