using System.Numerics;
using System.Runtime.CompilerServices;

namespace LiveMigration.Guest.Cpu.Fpu;

/// <summary>RISC-V rounding modes, numbered as in the rm field and frm.</summary>
public enum RoundingMode : byte
{
    NearestEven = 0,
    TowardZero = 1,
    Down = 2,
    Up = 3,
    NearestMaxMagnitude = 4,
}

/// <summary>fflags bits.</summary>
public static class FpFlag
{
    public const uint Inexact = 1, Underflow = 2, Overflow = 4, DivideByZero = 8, Invalid = 16;
}

/// <summary>An IEEE binary interchange format: binary32 (S) or binary64 (D), raw bits in the low bits of a ulong.</summary>
public sealed class FpFormat
{
    public static readonly FpFormat S = new(8, 23);
    public static readonly FpFormat D = new(11, 52);

    public readonly int FracBits, Bias, ExpMax;
    public readonly ulong SignBit, FracMask, Inf, MaxFinite, CanonicalNaN, QuietBit;

    private FpFormat(int expBits, int fracBits)
    {
        FracBits = fracBits;
        Bias = (1 << (expBits - 1)) - 1;
        ExpMax = (1 << expBits) - 1;
        SignBit = 1UL << (expBits + fracBits);
        FracMask = (1UL << fracBits) - 1;
        Inf = (ulong)ExpMax << fracBits;
        MaxFinite = Inf - 1;
        QuietBit = 1UL << (fracBits - 1);
        CanonicalNaN = Inf | QuietBit;
    }
}

/// <summary>What an operand is, from its bits.</summary>
public enum FpKind : byte { Zero, Finite, Inf, QuietNaN, SignalingNaN }

/// <summary>An unpacked operand: value = (-1)^Sign × Mant × 2^Exp, Mant normalized to bit FracBits when finite.</summary>
public readonly struct FpValue
{
    public readonly FpKind Kind;
    public readonly bool Sign;
    public readonly int Exp;
    public readonly ulong Mant;

    public FpValue(FpKind kind, bool sign, int exp, ulong mant)
    {
        Kind = kind;
        Sign = sign;
        Exp = exp;
        Mant = mant;
    }

    public bool IsNaN => Kind >= FpKind.QuietNaN;
}

/// <summary>
/// Exact IEEE 754 arithmetic in integers, as Berkeley SoftFloat does it: every operation takes the
/// rounding mode as an argument and ORs its exception flags into <c>flags</c>; nothing depends on
/// host floating-point state. RISC-V conventions: NaN results are the canonical NaN, tininess is
/// detected after rounding, underflow is raised only when the result is also inexact.
/// This file: unpacking, and rounding an exact (or sticky) intermediate to a format.
/// </summary>
public static partial class SoftFloat
{
    public static FpValue Unpack(FpFormat f, ulong bits)
    {
        bool sign = (bits & f.SignBit) != 0;
        int e = (int)((bits >> f.FracBits) & (ulong)f.ExpMax);
        ulong frac = bits & f.FracMask;
        if (e == f.ExpMax)
        {
            if (frac == 0) return new(FpKind.Inf, sign, 0, 0);
            return new((frac & f.QuietBit) != 0 ? FpKind.QuietNaN : FpKind.SignalingNaN, sign, 0, 0);
        }
        if (e == 0)
        {
            if (frac == 0) return new(FpKind.Zero, sign, 0, 0);
            int shift = BitOperations.LeadingZeroCount(frac) - (63 - f.FracBits);
            return new(FpKind.Finite, sign, 1 - f.Bias - f.FracBits - shift, frac << shift);
        }
        return new(FpKind.Finite, sign, e - f.Bias - f.FracBits, frac | (1UL << f.FracBits));
    }

    public static bool IsNaN(FpFormat f, ulong bits) => (bits & ~f.SignBit) > f.Inf;

    public static bool IsSignalingNaN(FpFormat f, ulong bits) => IsNaN(f, bits) && (bits & f.QuietBit) == 0;

    internal static ulong Zero(FpFormat f, bool sign) => sign ? f.SignBit : 0;

    /// <summary>The sign of an exact zero sum of operands with different signs: -0 only when rounding down.</summary>
    internal static bool ZeroSumSign(RoundingMode rm) => rm == RoundingMode.Down;

    /// <summary>Rounds (-1)^sign × m × 2^e (m ≠ 0, exact, or with a sticky bit well below the rounding point).</summary>
    internal static ulong RoundPack(FpFormat f, bool sign, UInt128 m, int e, RoundingMode rm, ref uint flags)
    {
        ulong hi = (ulong)(m >> 64);
        int msb = hi != 0 ? 127 - BitOperations.LeadingZeroCount(hi) : 63 - BitOperations.LeadingZeroCount((ulong)m);
        ulong sig;
        if (msb > 62)
        {
            int sh = msb - 62;
            sig = (ulong)(m >> sh) | (((m & ((UInt128.One << sh) - 1)) != 0) ? 1UL : 0);
        }
        else sig = (ulong)m << (62 - msb);
        return RoundPack62(f, sign, e + msb, sig, rm, ref flags);
    }

    /// <summary>Rounds (-1)^sign × sig × 2^(exp-62) where bit 62 of sig is set and bit 0 is sticky.</summary>
    internal static ulong RoundPack62(FpFormat f, bool sign, int exp, ulong sig, RoundingMode rm, ref uint flags)
    {
        int roundBits = 62 - f.FracBits;
        ulong roundMask = (1UL << roundBits) - 1, half = 1UL << (roundBits - 1);
        ulong inc = rm switch
        {
            RoundingMode.NearestEven or RoundingMode.NearestMaxMagnitude => half,
            RoundingMode.TowardZero => 0,
            RoundingMode.Down => sign ? roundMask : 0,
            _ => sign ? 0 : roundMask,
        };
        ulong signBits = sign ? f.SignBit : 0;
        int be = exp + f.Bias;
        ulong rb;
        if (be <= 0)
        {
            // Tiny unless rounding to full precision with unbounded exponent reaches the smallest normal.
            bool tiny = be < 0 || sig + inc < (1UL << 63);
            sig = ShiftRightJam(sig, 1 - be);
            rb = sig & roundMask;
            if (rb != 0) flags |= tiny ? FpFlag.Inexact | FpFlag.Underflow : FpFlag.Inexact;
            sig = (sig + inc) >> roundBits;
            if (rm == RoundingMode.NearestEven && rb == half) sig &= ~1UL;
            return signBits | sig; // a carry into bit FracBits makes it the smallest normal
        }
        rb = sig & roundMask;
        sig = (sig + inc) >> roundBits;
        if (rm == RoundingMode.NearestEven && rb == half) sig &= ~1UL;
        if ((sig >> (f.FracBits + 1)) != 0) { sig >>= 1; be++; }
        if (be >= f.ExpMax)
        {
            flags |= FpFlag.Overflow | FpFlag.Inexact;
            bool toInf = rm is RoundingMode.NearestEven or RoundingMode.NearestMaxMagnitude
                      || (rm == RoundingMode.Down && sign) || (rm == RoundingMode.Up && !sign);
            return signBits | (toInf ? f.Inf : f.MaxFinite);
        }
        if (rb != 0) flags |= FpFlag.Inexact;
        return signBits | ((ulong)be << f.FracBits) | (sig & f.FracMask);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static ulong ShiftRightJam(ulong v, int n)
        => n <= 0 ? v : n >= 64 ? (v != 0 ? 1UL : 0) : (v >> n) | ((v & ((1UL << n) - 1)) != 0 ? 1UL : 0);

    internal static UInt128 ShiftRightJam(UInt128 v, int n)
        => n <= 0 ? v : n >= 128 ? (v != 0 ? UInt128.One : UInt128.Zero) : (v >> n) | ((v & ((UInt128.One << n) - 1)) != 0 ? UInt128.One : UInt128.Zero);

    internal static int Msb(UInt128 m)
    {
        ulong hi = (ulong)(m >> 64);
        return hi != 0 ? 127 - BitOperations.LeadingZeroCount(hi) : 63 - BitOperations.LeadingZeroCount((ulong)m);
    }
}
