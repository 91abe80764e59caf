using System.Runtime.CompilerServices;

namespace LiveMigration.Guest.Cpu.Fpu;

/// <summary>
/// The arithmetic ops per format, raw bits in and out; <c>fl</c> carries the flags already set in
/// fcsr on entry. Round-to-nearest-even takes the host's IEEE double arithmetic (which .NET never
/// runs in another rounding mode) when the result is finite and far from the subnormal range —
/// then no NV, DZ, OF or UF is possible and the host result is the correctly rounded one — and
/// derives NX from an exact error term (TwoSum, an FMA residual), or skips it when NX is already
/// set (flags are sticky). Singles are computed in double and rounded once more: exact for
/// add/sub/mul/div/sqrt (53 ≥ 2·24 + 2); fma.s takes it only when the double result is not a
/// single-precision midpoint, where the second rounding could go wrong. Everything else, and every
/// other rounding mode, is <see cref="SoftFloat"/>; tests check the two agree.
/// </summary>
internal static class FpMath
{
    private static readonly FpFormat S = FpFormat.S, D = FpFormat.D;
    private const ulong SignD = 1UL << 63, InfD = 0x7FF0_0000_0000_0000;
    /// <summary>2^-960: above it every error term of a double op is exact and no result is tiny.</summary>
    private const ulong SafeMinD = (ulong)(1023 - 960) << 52;
    private const uint InfS = 0x7F80_0000;
    /// <summary>2^-125: single results from here up are not tiny.</summary>
    private const uint SafeMinS = 2u << 23;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static double Dbl(ulong bits) => BitConverter.UInt64BitsToDouble(bits);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool SafeD(double r) => (BitConverter.DoubleToUInt64Bits(r) & ~SignD) - SafeMinD < InfD - SafeMinD;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool SafeS(float r) => (BitConverter.SingleToUInt32Bits(r) & 0x7FFF_FFFFu) - SafeMinS < InfS - SafeMinS;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static double SumError(double x, double y, double s)
    {
        double bb = s - x;
        return (x - (s - bb)) + (y - bb);
    }

    /// <summary>A single from a double result whose own error is <paramref name="exact"/>-or-not, if it is safe.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryFinishS(double r, bool exactInDouble, ref uint fl, out ulong result)
    {
        float f = (float)r;
        result = BitConverter.SingleToUInt32Bits(f);
        if (!SafeS(f)) return false;
        if (!exactInDouble || f != r) fl |= FpFlag.Inexact;
        return true;
    }

    public static ulong AddS(ulong a, ulong b, RoundingMode rm, ref uint fl)
    {
        if (rm == RoundingMode.NearestEven)
        {
            double x = BitConverter.UInt32BitsToSingle((uint)a), y = BitConverter.UInt32BitsToSingle((uint)b), r = x + y;
            if (TryFinishS(r, SumError(x, y, r) == 0, ref fl, out ulong res)) return res;
        }
        return SoftFloat.Add(S, a, b, rm, ref fl);
    }

    public static ulong SubS(ulong a, ulong b, RoundingMode rm, ref uint fl) => AddS(a, b ^ (1UL << 31), rm, ref fl);

    public static ulong MulS(ulong a, ulong b, RoundingMode rm, ref uint fl)
    {
        if (rm == RoundingMode.NearestEven)
        {
            double r = (double)BitConverter.UInt32BitsToSingle((uint)a) * BitConverter.UInt32BitsToSingle((uint)b); // 48 bits: exact
            if (TryFinishS(r, true, ref fl, out ulong res)) return res;
        }
        return SoftFloat.Mul(S, a, b, rm, ref fl);
    }

    public static ulong DivS(ulong a, ulong b, RoundingMode rm, ref uint fl)
    {
        if (rm == RoundingMode.NearestEven)
        {
            double x = BitConverter.UInt32BitsToSingle((uint)a), y = BitConverter.UInt32BitsToSingle((uint)b), r = x / y;
            if (TryFinishS(r, (fl & FpFlag.Inexact) != 0 || Math.FusedMultiplyAdd(-r, y, x) == 0, ref fl, out ulong res)) return res;
        }
        return SoftFloat.Div(S, a, b, rm, ref fl);
    }

    public static ulong SqrtS(ulong a, RoundingMode rm, ref uint fl)
    {
        if (rm == RoundingMode.NearestEven && (uint)a < InfS)
        {
            double x = BitConverter.UInt32BitsToSingle((uint)a), r = Math.Sqrt(x);
            if (TryFinishS(r, (fl & FpFlag.Inexact) != 0 || Math.FusedMultiplyAdd(-r, r, x) == 0, ref fl, out ulong res)) return res;
        }
        return SoftFloat.Sqrt(S, a, rm, ref fl);
    }

    public static ulong MulAddS(ulong a, ulong b, ulong c, bool negP, bool negC, RoundingMode rm, ref uint fl)
    {
        if (rm == RoundingMode.NearestEven && (fl & FpFlag.Inexact) != 0)
        {
            double x = BitConverter.UInt32BitsToSingle((uint)a), y = BitConverter.UInt32BitsToSingle((uint)b), z = BitConverter.UInt32BitsToSingle((uint)c);
            double r = Math.FusedMultiplyAdd(negP ? -x : x, y, negC ? -z : z);
            // The low 29 bits of the double's fraction at exactly half: a single midpoint, round again exactly.
            if ((BitConverter.DoubleToUInt64Bits(r) & 0x1FFF_FFFF) != 0x1000_0000)
            {
                float f = (float)r;
                if (SafeS(f)) return BitConverter.SingleToUInt32Bits(f);
            }
        }
        return SoftFloat.MulAdd(S, a, b, c, negP, negC, rm, ref fl);
    }

    public static ulong AddD(ulong a, ulong b, RoundingMode rm, ref uint fl)
    {
        if (rm == RoundingMode.NearestEven)
        {
            double x = Dbl(a), y = Dbl(b), r = x + y;
            if (SafeD(r))
            {
                if ((fl & FpFlag.Inexact) == 0 && SumError(x, y, r) != 0) fl |= FpFlag.Inexact;
                return BitConverter.DoubleToUInt64Bits(r);
            }
        }
        return SoftFloat.Add(D, a, b, rm, ref fl);
    }

    public static ulong SubD(ulong a, ulong b, RoundingMode rm, ref uint fl) => AddD(a, b ^ SignD, rm, ref fl);

    public static ulong MulD(ulong a, ulong b, RoundingMode rm, ref uint fl)
    {
        if (rm == RoundingMode.NearestEven)
        {
            double x = Dbl(a), y = Dbl(b), r = x * y;
            if (SafeD(r))
            {
                if ((fl & FpFlag.Inexact) == 0 && Math.FusedMultiplyAdd(x, y, -r) != 0) fl |= FpFlag.Inexact;
                return BitConverter.DoubleToUInt64Bits(r);
            }
        }
        return SoftFloat.Mul(D, a, b, rm, ref fl);
    }

    public static ulong DivD(ulong a, ulong b, RoundingMode rm, ref uint fl)
    {
        if (rm == RoundingMode.NearestEven)
        {
            double x = Dbl(a), y = Dbl(b), r = x / y;
            // The residual x - r·y is exact once x, r and y are all clear of the subnormal range.
            if (SafeD(r) && SafeD(x) && SafeD(y))
            {
                if ((fl & FpFlag.Inexact) == 0 && Math.FusedMultiplyAdd(-r, y, x) != 0) fl |= FpFlag.Inexact;
                return BitConverter.DoubleToUInt64Bits(r);
            }
        }
        return SoftFloat.Div(D, a, b, rm, ref fl);
    }

    public static ulong SqrtD(ulong a, RoundingMode rm, ref uint fl)
    {
        if (rm == RoundingMode.NearestEven && a - SafeMinD < InfD - SafeMinD)
        {
            double x = Dbl(a), r = Math.Sqrt(x);
            if ((fl & FpFlag.Inexact) == 0 && Math.FusedMultiplyAdd(-r, r, x) != 0) fl |= FpFlag.Inexact;
            return BitConverter.DoubleToUInt64Bits(r);
        }
        return SoftFloat.Sqrt(D, a, rm, ref fl);
    }

    public static ulong MulAddD(ulong a, ulong b, ulong c, bool negP, bool negC, RoundingMode rm, ref uint fl)
    {
        // NX of a fused op has no cheap exact test: the host path only serves once NX is already set.
        if (rm == RoundingMode.NearestEven && (fl & FpFlag.Inexact) != 0)
        {
            double x = Dbl(a), y = Dbl(b), z = Dbl(c);
            double r = Math.FusedMultiplyAdd(negP ? -x : x, y, negC ? -z : z);
            if (SafeD(r)) return BitConverter.DoubleToUInt64Bits(r);
        }
        return SoftFloat.MulAdd(D, a, b, c, negP, negC, rm, ref fl);
    }
}
