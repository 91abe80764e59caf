namespace LiveMigration.Guest.Cpu.Fpu;

/// <summary>Comparisons, min/max (IEEE 754-2019 minimumNumber/maximumNumber) and fclass.</summary>
public static partial class SoftFloat
{
    /// <summary>An integer with the order of the (non-NaN) float; +0 and -0 map to the same key.</summary>
    private static long OrderKey(FpFormat f, ulong bits)
    {
        long mag = (long)(bits & ~f.SignBit);
        return (bits & f.SignBit) != 0 ? -mag : mag;
    }

    /// <summary>feq: quiet, NV only for a signaling NaN.</summary>
    public static bool Eq(FpFormat f, ulong a, ulong b, ref uint flags)
    {
        if (IsNaN(f, a) || IsNaN(f, b))
        {
            if (IsSignalingNaN(f, a) || IsSignalingNaN(f, b)) flags |= FpFlag.Invalid;
            return false;
        }
        return OrderKey(f, a) == OrderKey(f, b);
    }

    /// <summary>flt and fle: signaling, NV for any NaN.</summary>
    public static bool Lt(FpFormat f, ulong a, ulong b, ref uint flags)
    {
        if (IsNaN(f, a) || IsNaN(f, b)) { flags |= FpFlag.Invalid; return false; }
        return OrderKey(f, a) < OrderKey(f, b);
    }

    public static bool Le(FpFormat f, ulong a, ulong b, ref uint flags)
    {
        if (IsNaN(f, a) || IsNaN(f, b)) { flags |= FpFlag.Invalid; return false; }
        return OrderKey(f, a) <= OrderKey(f, b);
    }

    /// <summary>fmin/fmax: a NaN operand yields the other one, two NaNs the canonical NaN; -0 &lt; +0.</summary>
    public static ulong MinMax(FpFormat f, ulong a, ulong b, bool max, ref uint flags)
    {
        bool na = IsNaN(f, a), nb = IsNaN(f, b);
        if (na || nb)
        {
            if (IsSignalingNaN(f, a) || IsSignalingNaN(f, b)) flags |= FpFlag.Invalid;
            return na && nb ? f.CanonicalNaN : na ? b : a;
        }
        long ka = OrderKey(f, a), kb = OrderKey(f, b);
        if (ka == kb) // equal, or zeros of different signs: min takes the negative one
            return max ? a & b : a | b;
        return (ka < kb) != max ? a : b;
    }

    /// <summary>The fclass mask: bit 0 -inf … bit 7 +inf, 8 signaling NaN, 9 quiet NaN.</summary>
    public static ulong Classify(FpFormat f, ulong a)
    {
        bool sign = (a & f.SignBit) != 0;
        ulong mag = a & ~f.SignBit;
        if (mag > f.Inf) return (mag & f.QuietBit) != 0 ? 1UL << 9 : 1UL << 8;
        int bit = mag == f.Inf ? 0 : mag >= (1UL << f.FracBits) ? 1 : mag != 0 ? 2 : 3;
        return sign ? 1UL << bit : 1UL << (7 - bit);
    }
}
