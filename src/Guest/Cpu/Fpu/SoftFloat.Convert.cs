namespace LiveMigration.Guest.Cpu.Fpu;

/// <summary>Conversions between formats and to/from 32- and 64-bit integers (saturating, as RISC-V specifies).</summary>
public static partial class SoftFloat
{
    /// <summary>Converts between S and D; NaNs become the target's canonical NaN.</summary>
    public static ulong Convert(FpFormat from, FpFormat to, ulong a, RoundingMode rm, ref uint flags)
    {
        FpValue x = Unpack(from, a);
        switch (x.Kind)
        {
            case FpKind.SignalingNaN: flags |= FpFlag.Invalid; return to.CanonicalNaN;
            case FpKind.QuietNaN: return to.CanonicalNaN;
            case FpKind.Inf: return (x.Sign ? to.SignBit : 0) | to.Inf;
            case FpKind.Zero: return Zero(to, x.Sign);
            default: return RoundPack(to, x.Sign, x.Mant, x.Exp, rm, ref flags);
        }
    }

    /// <summary>A signed or unsigned integer of <paramref name="width"/> bits (its low bits in <paramref name="v"/>) to a float.</summary>
    public static ulong FromInt(FpFormat f, ulong v, int width, bool signed, RoundingMode rm, ref uint flags)
    {
        if (width == 32) v = signed ? (ulong)(long)(int)v : (uint)v;
        bool sign = signed && (long)v < 0;
        ulong mag = sign ? 0 - v : v;
        if (mag == 0) return 0;
        return RoundPack(f, sign, mag, 0, rm, ref flags);
    }

    /// <summary>
    /// A float to a signed or unsigned integer of <paramref name="width"/> bits, rounded by rm. Out of
    /// range and NaN saturate with NV only (NaN gives the maximum); 32-bit results are sign-extended.
    /// </summary>
    public static ulong ToInt(FpFormat f, ulong a, int width, bool signed, RoundingMode rm, ref uint flags)
    {
        FpValue x = Unpack(f, a);
        ulong max = signed ? (width == 32 ? int.MaxValue : (ulong)long.MaxValue) : (width == 32 ? uint.MaxValue : ulong.MaxValue);
        ulong min = signed ? (width == 32 ? unchecked((ulong)int.MinValue) : unchecked((ulong)long.MinValue)) : 0;
        ulong result;
        switch (x.Kind)
        {
            case FpKind.QuietNaN or FpKind.SignalingNaN: flags |= FpFlag.Invalid; result = max; break;
            case FpKind.Inf: flags |= FpFlag.Invalid; result = x.Sign ? min : max; break;
            case FpKind.Zero: result = 0; break;
            default:
                {
                    UInt128 mag = RoundToInteger(x, rm, out bool inexact);
                    // The largest magnitude each side allows.
                    UInt128 limit = x.Sign ? (signed ? (UInt128)1 << (width - 1) : 0) : max;
                    if (mag > limit) { flags |= FpFlag.Invalid; result = x.Sign ? min : max; break; }
                    if (inexact) flags |= FpFlag.Inexact;
                    result = x.Sign ? 0 - (ulong)mag : (ulong)mag;
                    break;
                }
        }
        return width == 32 ? (ulong)(long)(int)(uint)result : result;
    }

    /// <summary>|x| rounded to an integer (by rm, with x's sign); values of 2^100 and more report 2^100.</summary>
    private static UInt128 RoundToInteger(in FpValue x, RoundingMode rm, out bool inexact)
    {
        inexact = false;
        if (x.Exp >= 0) return x.Exp > 70 ? (UInt128)1 << 100 : (UInt128)x.Mant << x.Exp;
        int sh = -x.Exp;
        UInt128 m = x.Mant, whole, frac, half;
        if (sh > 100) { whole = 0; frac = 1; half = (UInt128)1 << 99; }
        else { whole = m >> sh; frac = m & (((UInt128)1 << sh) - 1); half = (UInt128)1 << (sh - 1); }
        if (frac == 0) return whole;
        inexact = true;
        bool up = rm switch
        {
            RoundingMode.NearestEven => frac > half || (frac == half && (whole & 1) != 0),
            RoundingMode.NearestMaxMagnitude => frac >= half,
            RoundingMode.TowardZero => false,
            RoundingMode.Down => x.Sign,
            _ => !x.Sign,
        };
        return up ? whole + 1 : whole;
    }
}
