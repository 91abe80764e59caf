namespace LiveMigration.Guest.Cpu;

/// <summary>Decoded operations. Compressed instructions decode to the same ops with length 2.</summary>
public enum Op : ushort
{
    Undecoded = 0,
    Illegal,
    /// <summary>A 32-bit instruction straddling a page: decoded on every execution, never cached.</summary>
    CrossPage,

    Lui, Auipc, Jal, Jalr,
    Beq, Bne, Blt, Bge, Bltu, Bgeu,
    Lb, Lh, Lw, Ld, Lbu, Lhu, Lwu,
    Sb, Sh, Sw, Sd,
    Addi, Slti, Sltiu, Xori, Ori, Andi, Slli, Srli, Srai,
    Add, Sub, Sll, Slt, Sltu, Xor, Srl, Sra, Or, And,
    Addiw, Slliw, Srliw, Sraiw, Addw, Subw, Sllw, Srlw, Sraw,
    Mul, Mulh, Mulhsu, Mulhu, Div, Divu, Rem, Remu,
    Mulw, Divw, Divuw, Remw, Remuw,
    Fence, FenceI, Ecall, Ebreak, Mret, Wfi, Sret, SfenceVma,
    Csrrw, Csrrs, Csrrc, Csrrwi, Csrrsi, Csrrci,
    LrW, ScW, AmoswapW, AmoaddW, AmoxorW, AmoandW, AmoorW, AmominW, AmomaxW, AmominuW, AmomaxuW,
    LrD, ScD, AmoswapD, AmoaddD, AmoxorD, AmoandD, AmoorD, AmominD, AmomaxD, AmominuD, AmomaxuD,

    // F and D. Rd/Rs1/Rs2 name f registers except where the op moves to or from x; Imm holds
    // rm | rs3 << 8 (rm 0 for ops without a rounding mode), or the offset for loads and stores.
    Flw, Fld, Fsw, Fsd,
    FmaddS, FmsubS, FnmsubS, FnmaddS, FmaddD, FmsubD, FnmsubD, FnmaddD,
    FaddS, FsubS, FmulS, FdivS, FsqrtS, FaddD, FsubD, FmulD, FdivD, FsqrtD,
    FsgnjS, FsgnjnS, FsgnjxS, FsgnjD, FsgnjnD, FsgnjxD,
    FminS, FmaxS, FminD, FmaxD,
    FcvtSD, FcvtDS,
    FcvtSW, FcvtSWu, FcvtSL, FcvtSLu, FcvtDW, FcvtDWu, FcvtDL, FcvtDLu,
    FmvWX, FmvDX,
    // These write an x register (rd = x0 goes to the sink).
    FeqS, FltS, FleS, FeqD, FltD, FleD,
    FclassS, FclassD,
    FcvtWS, FcvtWuS, FcvtLS, FcvtLuS, FcvtWD, FcvtWuD, FcvtLD, FcvtLuD,
    FmvXW, FmvXD,
}

/// <summary>One pre-decoded instruction: 16 bytes, cached per guest page.</summary>
public struct DecodedInsn
{
    public long Imm;
    public Op Op;
    public byte Rd;
    public byte Rs1;
    public byte Rs2;
    /// <summary>2 for compressed, 4 otherwise.</summary>
    public byte Length;
    /// <summary>Raw bits are kept for the illegal-instruction mtval (QEMU reports them).</summary>
    public ushort Pad;
}
