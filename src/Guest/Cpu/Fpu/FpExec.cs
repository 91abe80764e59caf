using System.Runtime.CompilerServices;

namespace LiveMigration.Guest.Cpu.Fpu;

/// <summary>
/// One F/D instruction (not a load or store) on the CPU state: NaN-boxing of singles, the rounding
/// mode (static or frm), the flags ORed into fcsr. Shared by the interpreter and compiled blocks.
/// </summary>
internal static unsafe class FpExec
{
    public const ulong BoxMask = 0xFFFF_FFFF_0000_0000;
    public const uint FlagsMask = 0x1F;
    public const int FrmShift = 5;

    /// <summary>False when mstatus.FS is Off: FP instructions and the FP CSRs are then illegal.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Enabled(CpuState* s) => Mstatus.FpEnabled(s->Mstatus);

    /// <summary>Sets mstatus.FS to Dirty (SD is computed on read); every write to an f register or fcsr calls it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void MarkDirty(CpuState* s) => s->Mstatus |= Mstatus.FsDirty;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong BoxS(uint v) => BoxMask | v;

    /// <summary>A single from a 64-bit register: an improperly boxed value reads as the canonical NaN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong UnboxS(ulong v) => (v & BoxMask) == BoxMask ? (uint)v : FpFormat.S.CanonicalNaN;

    /// <summary>The effective rounding mode for an rm field; false when it (or frm, for 7) is reserved.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryRoundingMode(CpuState* s, long imm, out RoundingMode rm)
    {
        uint r = (uint)imm & 7;
        if (r == 7) r = (s->Fcsr >> FrmShift) & 7;
        rm = (RoundingMode)r;
        return r <= 4;
    }

    /// <summary>Executes the op; false (and nothing changed) when it is illegal: FP off, or a reserved rounding mode.</summary>
    public static bool Execute(CpuState* s, Op op, int rd, int rs1, int rs2, long imm)
    {
        if (!Enabled(s) || !TryRoundingMode(s, imm, out RoundingMode rm)) return false;
        if (op < Op.FeqS) MarkDirty(s); // as QEMU 7.2: an f-register write dirties FS; accrued flags alone do not
        ulong* f = s->F;
        ulong* x = s->X;
        uint fl = s->Fcsr & FlagsMask; // FpMath skips work for flags already set
        FpFormat S = FpFormat.S, D = FpFormat.D;
        switch (op)
        {
            case Op.FmaddS or Op.FmsubS or Op.FnmsubS or Op.FnmaddS:
                {
                    int v = op - Op.FmaddS;
                    f[rd] = BoxS((uint)FpMath.MulAddS(UnboxS(f[rs1]), UnboxS(f[rs2]), UnboxS(f[(int)(imm >> Decoder.Rs3Shift) & 31]), v >= 2, (v & 1) != 0, rm, ref fl));
                    break;
                }
            case Op.FmaddD or Op.FmsubD or Op.FnmsubD or Op.FnmaddD:
                {
                    int v = op - Op.FmaddD;
                    f[rd] = FpMath.MulAddD(f[rs1], f[rs2], f[(int)(imm >> Decoder.Rs3Shift) & 31], v >= 2, (v & 1) != 0, rm, ref fl);
                    break;
                }
            case Op.FaddS: f[rd] = BoxS((uint)FpMath.AddS(UnboxS(f[rs1]), UnboxS(f[rs2]), rm, ref fl)); break;
            case Op.FsubS: f[rd] = BoxS((uint)FpMath.SubS(UnboxS(f[rs1]), UnboxS(f[rs2]), rm, ref fl)); break;
            case Op.FmulS: f[rd] = BoxS((uint)FpMath.MulS(UnboxS(f[rs1]), UnboxS(f[rs2]), rm, ref fl)); break;
            case Op.FdivS: f[rd] = BoxS((uint)FpMath.DivS(UnboxS(f[rs1]), UnboxS(f[rs2]), rm, ref fl)); break;
            case Op.FsqrtS: f[rd] = BoxS((uint)FpMath.SqrtS(UnboxS(f[rs1]), rm, ref fl)); break;
            case Op.FaddD: f[rd] = FpMath.AddD(f[rs1], f[rs2], rm, ref fl); break;
            case Op.FsubD: f[rd] = FpMath.SubD(f[rs1], f[rs2], rm, ref fl); break;
            case Op.FmulD: f[rd] = FpMath.MulD(f[rs1], f[rs2], rm, ref fl); break;
            case Op.FdivD: f[rd] = FpMath.DivD(f[rs1], f[rs2], rm, ref fl); break;
            case Op.FsqrtD: f[rd] = FpMath.SqrtD(f[rs1], rm, ref fl); break;

            case Op.FsgnjS or Op.FsgnjnS or Op.FsgnjxS:
                {
                    ulong a = UnboxS(f[rs1]), b = UnboxS(f[rs2]);
                    f[rd] = BoxS((uint)SignInject(a, b, op - Op.FsgnjS, 1UL << 31));
                    break;
                }
            case Op.FsgnjD or Op.FsgnjnD or Op.FsgnjxD: f[rd] = SignInject(f[rs1], f[rs2], op - Op.FsgnjD, 1UL << 63); break;
            case Op.FminS or Op.FmaxS: f[rd] = BoxS((uint)SoftFloat.MinMax(S, UnboxS(f[rs1]), UnboxS(f[rs2]), op == Op.FmaxS, ref fl)); break;
            case Op.FminD or Op.FmaxD: f[rd] = SoftFloat.MinMax(D, f[rs1], f[rs2], op == Op.FmaxD, ref fl); break;
            case Op.FcvtSD: f[rd] = BoxS((uint)SoftFloat.Convert(D, S, f[rs1], rm, ref fl)); break;
            case Op.FcvtDS: f[rd] = SoftFloat.Convert(S, D, UnboxS(f[rs1]), rm, ref fl); break;

            case Op.FcvtSW or Op.FcvtSWu or Op.FcvtSL or Op.FcvtSLu:
                {
                    int k = op - Op.FcvtSW;
                    f[rd] = BoxS((uint)SoftFloat.FromInt(S, x[rs1], k < 2 ? 32 : 64, (k & 1) == 0, rm, ref fl));
                    break;
                }
            case Op.FcvtDW or Op.FcvtDWu or Op.FcvtDL or Op.FcvtDLu:
                {
                    int k = op - Op.FcvtDW;
                    f[rd] = SoftFloat.FromInt(D, x[rs1], k < 2 ? 32 : 64, (k & 1) == 0, rm, ref fl);
                    break;
                }
            case Op.FmvWX: f[rd] = BoxS((uint)x[rs1]); break;
            case Op.FmvDX: f[rd] = x[rs1]; break;

            case Op.FeqS: x[rd] = SoftFloat.Eq(S, UnboxS(f[rs1]), UnboxS(f[rs2]), ref fl) ? 1UL : 0; break;
            case Op.FltS: x[rd] = SoftFloat.Lt(S, UnboxS(f[rs1]), UnboxS(f[rs2]), ref fl) ? 1UL : 0; break;
            case Op.FleS: x[rd] = SoftFloat.Le(S, UnboxS(f[rs1]), UnboxS(f[rs2]), ref fl) ? 1UL : 0; break;
            case Op.FeqD: x[rd] = SoftFloat.Eq(D, f[rs1], f[rs2], ref fl) ? 1UL : 0; break;
            case Op.FltD: x[rd] = SoftFloat.Lt(D, f[rs1], f[rs2], ref fl) ? 1UL : 0; break;
            case Op.FleD: x[rd] = SoftFloat.Le(D, f[rs1], f[rs2], ref fl) ? 1UL : 0; break;
            case Op.FclassS: x[rd] = SoftFloat.Classify(S, UnboxS(f[rs1])); break;
            case Op.FclassD: x[rd] = SoftFloat.Classify(D, f[rs1]); break;
            case Op.FcvtWS or Op.FcvtWuS or Op.FcvtLS or Op.FcvtLuS:
                {
                    int k = op - Op.FcvtWS;
                    x[rd] = SoftFloat.ToInt(S, UnboxS(f[rs1]), k < 2 ? 32 : 64, (k & 1) == 0, rm, ref fl);
                    break;
                }
            case Op.FcvtWD or Op.FcvtWuD or Op.FcvtLD or Op.FcvtLuD:
                {
                    int k = op - Op.FcvtWD;
                    x[rd] = SoftFloat.ToInt(D, f[rs1], k < 2 ? 32 : 64, (k & 1) == 0, rm, ref fl);
                    break;
                }
            case Op.FmvXW: x[rd] = (ulong)(long)(int)(uint)f[rs1]; break;
            case Op.FmvXD: x[rd] = f[rs1]; break;
            default: throw new InvalidOperationException($"{op} is not an FP compute op");
        }
        s->Fcsr |= fl;
        return true;
    }

    /// <summary>fsgnj (kind 0), fsgnjn (1), fsgnjx (2): a's magnitude with a sign from b.</summary>
    private static ulong SignInject(ulong a, ulong b, int kind, ulong signBit)
    {
        ulong sign = kind switch { 0 => b & signBit, 1 => ~b & signBit, _ => (a ^ b) & signBit };
        return (a & ~signBit) | sign;
    }
}
