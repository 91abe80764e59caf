namespace LiveMigration.Guest.Cpu;

/// <summary>
/// Decodes RV64IMAC + Zicsr + Zifencei + the privileged instructions into <see cref="DecodedInsn"/>. Compressed forms are
/// expanded to their base op. rd = x0 becomes the sink register so execution never tests it.
/// </summary>
public static partial class Decoder
{
    public static bool IsCompressed(uint lowHalf) => (lowHalf & 3) != 3;

    public static DecodedInsn Decode(uint bits)
        => IsCompressed(bits) ? DecodeCompressed((ushort)bits) : Decode32(bits);

    private static DecodedInsn Make(Op op, int rd, int rs1, int rs2, long imm, int length)
        => new()
        {
            Op = op,
            Rd = (byte)(rd == 0 ? CpuState.SinkRegister : rd),
            Rs1 = (byte)rs1,
            Rs2 = (byte)rs2,
            Imm = imm,
            Length = (byte)length,
        };

    private static DecodedInsn Illegal(uint bits, int length)
        => new() { Op = Op.Illegal, Imm = bits, Length = (byte)length, Rd = CpuState.SinkRegister };

    private static long SignExtend(uint value, int bits) => ((long)value << (64 - bits)) >> (64 - bits);

    public static DecodedInsn Decode32(uint b)
    {
        int rd = (int)(b >> 7) & 31, rs1 = (int)(b >> 15) & 31, rs2 = (int)(b >> 20) & 31;
        uint f3 = (b >> 12) & 7, f7 = b >> 25;
        long immI = (int)b >> 20;
        long immS = ((int)b >> 25 << 5) | (rd);
        long immB = SignExtend(((b >> 31) << 12) | (((b >> 7) & 1) << 11) | (((b >> 25) & 0x3F) << 5) | (((b >> 8) & 0xF) << 1), 13);
        long immU = (int)(b & 0xFFFFF000);
        long immJ = SignExtend(((b >> 31) << 20) | (((b >> 12) & 0xFF) << 12) | (((b >> 20) & 1) << 11) | (((b >> 21) & 0x3FF) << 1), 21);

        switch (b & 0x7F)
        {
            case 0x37: return Make(Op.Lui, rd, 0, 0, immU, 4);
            case 0x17: return Make(Op.Auipc, rd, 0, 0, immU, 4);
            case 0x6F: return Make(Op.Jal, rd, 0, 0, immJ, 4);
            case 0x67: return f3 == 0 ? Make(Op.Jalr, rd, rs1, 0, immI, 4) : Illegal(b, 4);
            case 0x63:
                {
                    Op op = f3 switch { 0 => Op.Beq, 1 => Op.Bne, 4 => Op.Blt, 5 => Op.Bge, 6 => Op.Bltu, 7 => Op.Bgeu, _ => Op.Illegal };
                    return op == Op.Illegal ? Illegal(b, 4) : Make(op, 0, rs1, rs2, immB, 4);
                }
            case 0x03:
                {
                    Op op = f3 switch { 0 => Op.Lb, 1 => Op.Lh, 2 => Op.Lw, 3 => Op.Ld, 4 => Op.Lbu, 5 => Op.Lhu, 6 => Op.Lwu, _ => Op.Illegal };
                    return op == Op.Illegal ? Illegal(b, 4) : Make(op, rd, rs1, 0, immI, 4);
                }
            case 0x23:
                {
                    Op op = f3 switch { 0 => Op.Sb, 1 => Op.Sh, 2 => Op.Sw, 3 => Op.Sd, _ => Op.Illegal };
                    return op == Op.Illegal ? Illegal(b, 4) : Make(op, 0, rs1, rs2, immS, 4);
                }
            case 0x13:
                switch (f3)
                {
                    case 0: return Make(Op.Addi, rd, rs1, 0, immI, 4);
                    case 2: return Make(Op.Slti, rd, rs1, 0, immI, 4);
                    case 3: return Make(Op.Sltiu, rd, rs1, 0, immI, 4);
                    case 4: return Make(Op.Xori, rd, rs1, 0, immI, 4);
                    case 6: return Make(Op.Ori, rd, rs1, 0, immI, 4);
                    case 7: return Make(Op.Andi, rd, rs1, 0, immI, 4);
                    case 1: return (b >> 26) == 0 ? Make(Op.Slli, rd, rs1, 0, (b >> 20) & 63, 4) : Illegal(b, 4);
                    default: // 5
                        return (b >> 26) switch
                        {
                            0 => Make(Op.Srli, rd, rs1, 0, (b >> 20) & 63, 4),
                            0x10 => Make(Op.Srai, rd, rs1, 0, (b >> 20) & 63, 4),
                            _ => Illegal(b, 4),
                        };
                }
            case 0x1B:
                switch (f3)
                {
                    case 0: return Make(Op.Addiw, rd, rs1, 0, immI, 4);
                    case 1: return f7 == 0 ? Make(Op.Slliw, rd, rs1, 0, rs2, 4) : Illegal(b, 4);
                    case 5:
                        return f7 switch
                        {
                            0 => Make(Op.Srliw, rd, rs1, 0, rs2, 4),
                            0x20 => Make(Op.Sraiw, rd, rs1, 0, rs2, 4),
                            _ => Illegal(b, 4),
                        };
                    default: return Illegal(b, 4);
                }
            case 0x33:
                {
                    Op op = (f7, f3) switch
                    {
                        (0, 0) => Op.Add, (0x20, 0) => Op.Sub, (0, 1) => Op.Sll, (0, 2) => Op.Slt, (0, 3) => Op.Sltu,
                        (0, 4) => Op.Xor, (0, 5) => Op.Srl, (0x20, 5) => Op.Sra, (0, 6) => Op.Or, (0, 7) => Op.And,
                        (1, 0) => Op.Mul, (1, 1) => Op.Mulh, (1, 2) => Op.Mulhsu, (1, 3) => Op.Mulhu,
                        (1, 4) => Op.Div, (1, 5) => Op.Divu, (1, 6) => Op.Rem, (1, 7) => Op.Remu,
                        _ => Op.Illegal,
                    };
                    return op == Op.Illegal ? Illegal(b, 4) : Make(op, rd, rs1, rs2, 0, 4);
                }
            case 0x3B:
                {
                    Op op = (f7, f3) switch
                    {
                        (0, 0) => Op.Addw, (0x20, 0) => Op.Subw, (0, 1) => Op.Sllw, (0, 5) => Op.Srlw, (0x20, 5) => Op.Sraw,
                        (1, 0) => Op.Mulw, (1, 4) => Op.Divw, (1, 5) => Op.Divuw, (1, 6) => Op.Remw, (1, 7) => Op.Remuw,
                        _ => Op.Illegal,
                    };
                    return op == Op.Illegal ? Illegal(b, 4) : Make(op, rd, rs1, rs2, 0, 4);
                }
            case 0x0F:
                return f3 switch
                {
                    0 => Make(Op.Fence, 0, 0, 0, 0, 4),
                    1 => Make(Op.FenceI, 0, 0, 0, 0, 4),
                    _ => Illegal(b, 4),
                };
            case 0x73:
                {
                    uint csr = b >> 20;
                    switch (f3)
                    {
                        case 0:
                            if (f7 == 0x09 && rd == 0) return Make(Op.SfenceVma, 0, rs1, rs2, 0, 4);
                            if (rd != 0 || rs1 != 0) return Illegal(b, 4);
                            return csr switch
                            {
                                0x000 => Make(Op.Ecall, 0, 0, 0, 0, 4),
                                0x001 => Make(Op.Ebreak, 0, 0, 0, 0, 4),
                                0x302 => Make(Op.Mret, 0, 0, 0, 0, 4),
                                0x102 => Make(Op.Sret, 0, 0, 0, 0, 4),
                                0x105 => Make(Op.Wfi, 0, 0, 0, 0, 4),
                                _ => Illegal(b, 4),
                            };
                        case 1: return Make(Op.Csrrw, rd, rs1, 0, csr, 4);
                        case 2: return Make(Op.Csrrs, rd, rs1, 0, csr, 4);
                        case 3: return Make(Op.Csrrc, rd, rs1, 0, csr, 4);
                        case 5: return Make(Op.Csrrwi, rd, rs1, 0, csr, 4);
                        case 6: return Make(Op.Csrrsi, rd, rs1, 0, csr, 4);
                        case 7: return Make(Op.Csrrci, rd, rs1, 0, csr, 4);
                        default: return Illegal(b, 4);
                    }
                }
            case 0x2F:
                {
                    if (f3 != 2 && f3 != 3) return Illegal(b, 4);
                    bool d = f3 == 3;
                    Op op = (b >> 27) switch
                    {
                        0x02 when rs2 == 0 => d ? Op.LrD : Op.LrW,
                        0x03 => d ? Op.ScD : Op.ScW,
                        0x01 => d ? Op.AmoswapD : Op.AmoswapW,
                        0x00 => d ? Op.AmoaddD : Op.AmoaddW,
                        0x04 => d ? Op.AmoxorD : Op.AmoxorW,
                        0x0C => d ? Op.AmoandD : Op.AmoandW,
                        0x08 => d ? Op.AmoorD : Op.AmoorW,
                        0x10 => d ? Op.AmominD : Op.AmominW,
                        0x14 => d ? Op.AmomaxD : Op.AmomaxW,
                        0x18 => d ? Op.AmominuD : Op.AmominuW,
                        0x1C => d ? Op.AmomaxuD : Op.AmomaxuW,
                        _ => Op.Illegal,
                    };
                    return op == Op.Illegal ? Illegal(b, 4) : Make(op, rd, rs1, rs2, 0, 4);
                }
            case 0x07 or 0x27 or 0x43 or 0x47 or 0x4B or 0x4F or 0x53:
                return DecodeFp(b);
            default:
                return Illegal(b, 4);
        }
    }

    public static DecodedInsn DecodeCompressed(ushort h)
    {
        uint b = h;
        uint f3 = b >> 13;
        int rdFull = (int)(b >> 7) & 31, rs2Full = (int)(b >> 2) & 31;
        int rdP = 8 + (int)((b >> 2) & 7), rs1P = 8 + (int)((b >> 7) & 7);
        long imm6 = SignExtend((((b >> 12) & 1) << 5) | ((b >> 2) & 31), 6);
        uint shamt = (((b >> 12) & 1) << 5) | ((b >> 2) & 31);

        switch (b & 3)
        {
            case 0:
                switch (f3)
                {
                    case 0:
                        {
                            uint nzuimm = (((b >> 11) & 3) << 4) | (((b >> 7) & 0xF) << 6) | (((b >> 6) & 1) << 2) | (((b >> 5) & 1) << 3);
                            return nzuimm == 0 ? Illegal(b, 2) : Make(Op.Addi, rdP, 2, 0, nzuimm, 2);
                        }
                    case 2: return Make(Op.Lw, rdP, rs1P, 0, CLwOffset(b), 2);
                    case 3: return Make(Op.Ld, rdP, rs1P, 0, CLdOffset(b), 2);
                    case 6: return Make(Op.Sw, 0, rs1P, rdP, CLwOffset(b), 2);
                    case 7: return Make(Op.Sd, 0, rs1P, rdP, CLdOffset(b), 2);
                    case 1: return MakeFp(Op.Fld, rdP, rs1P, 0, CLdOffset(b), 2);
                    case 5: return MakeFp(Op.Fsd, 0, rs1P, rdP, CLdOffset(b), 2);
                    default: return Illegal(b, 2); // the reserved slot
                }
            case 1:
                switch (f3)
                {
                    case 0: return Make(Op.Addi, rdFull, rdFull, 0, imm6, 2);
                    case 1: return rdFull == 0 ? Illegal(b, 2) : Make(Op.Addiw, rdFull, rdFull, 0, imm6, 2);
                    case 2: return Make(Op.Addi, rdFull, 0, 0, imm6, 2);
                    case 3:
                        if (rdFull == 2)
                        {
                            uint raw = (((b >> 12) & 1) << 9) | (((b >> 6) & 1) << 4) | (((b >> 5) & 1) << 6) | (((b >> 3) & 3) << 7) | (((b >> 2) & 1) << 5);
                            return raw == 0 ? Illegal(b, 2) : Make(Op.Addi, 2, 2, 0, SignExtend(raw, 10), 2);
                        }
                        return imm6 == 0 ? Illegal(b, 2) : Make(Op.Lui, rdFull, 0, 0, imm6 << 12, 2);
                    case 4:
                        switch ((b >> 10) & 3)
                        {
                            case 0: return Make(Op.Srli, rs1P, rs1P, 0, shamt, 2);
                            case 1: return Make(Op.Srai, rs1P, rs1P, 0, shamt, 2);
                            case 2: return Make(Op.Andi, rs1P, rs1P, 0, imm6, 2);
                            default:
                                {
                                    uint sel = ((b >> 12) & 1) << 2 | ((b >> 5) & 3);
                                    Op op = sel switch { 0 => Op.Sub, 1 => Op.Xor, 2 => Op.Or, 3 => Op.And, 4 => Op.Subw, 5 => Op.Addw, _ => Op.Illegal };
                                    return op == Op.Illegal ? Illegal(b, 2) : Make(op, rs1P, rs1P, rdP, 0, 2);
                                }
                        }
                    case 5: return Make(Op.Jal, 0, 0, 0, CJOffset(b), 2);
                    case 6: return Make(Op.Beq, 0, rs1P, 0, CBOffset(b), 2);
                    default: return Make(Op.Bne, 0, rs1P, 0, CBOffset(b), 2);
                }
            default:
                switch (f3)
                {
                    case 0: return Make(Op.Slli, rdFull, rdFull, 0, shamt, 2);
                    case 2:
                        {
                            if (rdFull == 0) return Illegal(b, 2);
                            uint off = (((b >> 12) & 1) << 5) | (((b >> 4) & 7) << 2) | (((b >> 2) & 3) << 6);
                            return Make(Op.Lw, rdFull, 2, 0, off, 2);
                        }
                    case 3:
                        {
                            if (rdFull == 0) return Illegal(b, 2);
                            uint off = (((b >> 12) & 1) << 5) | (((b >> 5) & 3) << 3) | (((b >> 2) & 7) << 6);
                            return Make(Op.Ld, rdFull, 2, 0, off, 2);
                        }
                    case 4:
                        if (((b >> 12) & 1) == 0)
                        {
                            if (rs2Full == 0)
                                return rdFull == 0 ? Illegal(b, 2) : Make(Op.Jalr, 0, rdFull, 0, 0, 2);
                            return Make(Op.Add, rdFull, 0, rs2Full, 0, 2);
                        }
                        if (rs2Full == 0)
                            return rdFull == 0 ? Make(Op.Ebreak, 0, 0, 0, 0, 2) : Make(Op.Jalr, 1, rdFull, 0, 0, 2);
                        return Make(Op.Add, rdFull, rdFull, rs2Full, 0, 2);
                    case 6:
                        {
                            uint off = (((b >> 9) & 0xF) << 2) | (((b >> 7) & 3) << 6);
                            return Make(Op.Sw, 0, 2, rs2Full, off, 2);
                        }
                    case 7:
                        {
                            uint off = (((b >> 10) & 7) << 3) | (((b >> 7) & 7) << 6);
                            return Make(Op.Sd, 0, 2, rs2Full, off, 2);
                        }
                    case 1:
                        {
                            uint off = (((b >> 12) & 1) << 5) | (((b >> 5) & 3) << 3) | (((b >> 2) & 7) << 6);
                            return MakeFp(Op.Fld, rdFull, 2, 0, off, 2);
                        }
                    default: // 5: C.FSDSP
                        {
                            uint off = (((b >> 10) & 7) << 3) | (((b >> 7) & 7) << 6);
                            return MakeFp(Op.Fsd, 0, 2, rs2Full, off, 2);
                        }
                }
        }
    }

    private static long CLwOffset(uint b) => (((b >> 10) & 7) << 3) | (((b >> 6) & 1) << 2) | (((b >> 5) & 1) << 6);
    private static long CLdOffset(uint b) => (((b >> 10) & 7) << 3) | (((b >> 5) & 3) << 6);

    private static long CJOffset(uint b)
    {
        uint raw = (((b >> 12) & 1) << 11) | (((b >> 11) & 1) << 4) | (((b >> 9) & 3) << 8) | (((b >> 8) & 1) << 10)
                 | (((b >> 7) & 1) << 6) | (((b >> 6) & 1) << 7) | (((b >> 3) & 7) << 1) | (((b >> 2) & 1) << 5);
        return SignExtend(raw, 12);
    }

    private static long CBOffset(uint b)
    {
        uint raw = (((b >> 12) & 1) << 8) | (((b >> 10) & 3) << 3) | (((b >> 5) & 3) << 6) | (((b >> 3) & 3) << 1) | (((b >> 2) & 1) << 5);
        return SignExtend(raw, 9);
    }
}
