namespace LiveMigration.Guest.Cpu.Fpu;

/// <summary>add, sub, mul, div, sqrt and fused multiply-add, each rounded once from the exact result.</summary>
public static partial class SoftFloat
{
    /// <summary>NaN operands: the canonical NaN, NV when any is signaling.</summary>
    private static ulong PropagateNaN(FpFormat f, in FpValue a, in FpValue b, ref uint flags)
    {
        if (a.Kind == FpKind.SignalingNaN || b.Kind == FpKind.SignalingNaN) flags |= FpFlag.Invalid;
        return f.CanonicalNaN;
    }

    private static ulong InvalidNaN(FpFormat f, ref uint flags)
    {
        flags |= FpFlag.Invalid;
        return f.CanonicalNaN;
    }

    public static ulong Add(FpFormat f, ulong a, ulong b, RoundingMode rm, ref uint flags)
        => AddValues(f, Unpack(f, a), a, Unpack(f, b), b, false, rm, ref flags);

    public static ulong Sub(FpFormat f, ulong a, ulong b, RoundingMode rm, ref uint flags)
        => AddValues(f, Unpack(f, a), a, Unpack(f, b), b ^ f.SignBit, true, rm, ref flags);

    private static ulong AddValues(FpFormat f, in FpValue x, ulong xBits, in FpValue y0, ulong yBits, bool negateY, RoundingMode rm, ref uint flags)
    {
        if (x.IsNaN || y0.IsNaN) return PropagateNaN(f, x, y0, ref flags);
        var y = negateY ? new FpValue(y0.Kind, !y0.Sign, y0.Exp, y0.Mant) : y0;
        if (x.Kind == FpKind.Inf)
            return y.Kind == FpKind.Inf && y.Sign != x.Sign ? InvalidNaN(f, ref flags) : xBits;
        if (y.Kind == FpKind.Inf) return yBits;
        if (x.Kind == FpKind.Zero)
            return y.Kind != FpKind.Zero ? yBits : Zero(f, x.Sign == y.Sign ? x.Sign : ZeroSumSign(rm));
        if (y.Kind == FpKind.Zero) return xBits;
        return AddExact(f, x.Sign, x.Mant, x.Exp, y.Sign, y.Mant, y.Exp, rm, ref flags);
    }

    /// <summary>Rounds the exact sum of two nonzero finite terms (-1)^s × m × 2^e.</summary>
    private static ulong AddExact(FpFormat f, bool sa, UInt128 ma, int ea, bool sb, UInt128 mb, int eb, RoundingMode rm, ref uint flags)
    {
        // Both to bit 125: what the jam shifts out lies far below any rounding point.
        int na = 125 - Msb(ma), nb = 125 - Msb(mb);
        ma <<= na; ea -= na;
        mb <<= nb; eb -= nb;
        if (ea < eb) { (sa, ma, ea, sb, mb, eb) = (sb, mb, eb, sa, ma, ea); }
        mb = ShiftRightJam(mb, ea - eb);
        if (sa == sb) return RoundPack(f, sa, ma + mb, ea, rm, ref flags);
        if (ma == mb) return Zero(f, ZeroSumSign(rm));
        return ma > mb ? RoundPack(f, sa, ma - mb, ea, rm, ref flags) : RoundPack(f, sb, mb - ma, ea, rm, ref flags);
    }

    public static ulong Mul(FpFormat f, ulong a, ulong b, RoundingMode rm, ref uint flags)
    {
        FpValue x = Unpack(f, a), y = Unpack(f, b);
        if (x.IsNaN || y.IsNaN) return PropagateNaN(f, x, y, ref flags);
        bool sign = x.Sign != y.Sign;
        if (x.Kind == FpKind.Inf || y.Kind == FpKind.Inf)
            return x.Kind == FpKind.Zero || y.Kind == FpKind.Zero ? InvalidNaN(f, ref flags) : (sign ? f.SignBit : 0) | f.Inf;
        if (x.Kind == FpKind.Zero || y.Kind == FpKind.Zero) return Zero(f, sign);
        return RoundPack(f, sign, (UInt128)x.Mant * y.Mant, x.Exp + y.Exp, rm, ref flags);
    }

    public static ulong Div(FpFormat f, ulong a, ulong b, RoundingMode rm, ref uint flags)
    {
        FpValue x = Unpack(f, a), y = Unpack(f, b);
        if (x.IsNaN || y.IsNaN) return PropagateNaN(f, x, y, ref flags);
        bool sign = x.Sign != y.Sign;
        ulong inf = (sign ? f.SignBit : 0) | f.Inf;
        if (x.Kind == FpKind.Inf) return y.Kind == FpKind.Inf ? InvalidNaN(f, ref flags) : inf;
        if (y.Kind == FpKind.Inf) return Zero(f, sign);
        if (y.Kind == FpKind.Zero)
        {
            if (x.Kind == FpKind.Zero) return InvalidNaN(f, ref flags);
            flags |= FpFlag.DivideByZero;
            return inf;
        }
        if (x.Kind == FpKind.Zero) return Zero(f, sign);
        UInt128 n = (UInt128)x.Mant << 64;
        UInt128 q = n / y.Mant;
        if (q * y.Mant != n) q |= 1; // sticky: the quotient has 11+ bits below the rounding point
        return RoundPack(f, sign, q, x.Exp - y.Exp - 64, rm, ref flags);
    }

    public static ulong Sqrt(FpFormat f, ulong a, RoundingMode rm, ref uint flags)
    {
        FpValue x = Unpack(f, a);
        if (x.IsNaN) return PropagateNaN(f, x, x, ref flags);
        if (x.Kind == FpKind.Zero) return a;
        if (x.Sign) return InvalidNaN(f, ref flags);
        if (x.Kind == FpKind.Inf) return a;
        ulong m = x.Mant;
        int e = x.Exp;
        if ((e & 1) != 0) { m <<= 1; e--; }
        UInt128 n = (UInt128)m << 64;
        UInt128 r = ISqrt(n);
        if (r * r != n) r |= 1;
        return RoundPack(f, false, r, (e - 64) / 2, rm, ref flags);
    }

    /// <summary>floor(sqrt(n)) for n &lt; 2^120: a host estimate made exact by integer correction.</summary>
    private static UInt128 ISqrt(UInt128 n)
    {
        UInt128 r = (UInt128)Math.Sqrt((double)n);
        if (r != 0) r = (r + n / r) >> 1;
        while (r * r > n) r--;
        while ((r + 1) * (r + 1) <= n) r++;
        return r;
    }

    /// <summary>(-1)^negProduct × a × b + (-1)^negAddend × c, rounded once.</summary>
    public static ulong MulAdd(FpFormat f, ulong a, ulong b, ulong c, bool negateProduct, bool negateAddend, RoundingMode rm, ref uint flags)
    {
        FpValue x = Unpack(f, a), y = Unpack(f, b), z = Unpack(f, c);
        bool infZero = (x.Kind == FpKind.Inf && y.Kind == FpKind.Zero) || (x.Kind == FpKind.Zero && y.Kind == FpKind.Inf);
        if (x.IsNaN || y.IsNaN || z.IsNaN)
        {
            // RISC-V: Inf × 0 is invalid even when the addend is a quiet NaN.
            if (x.Kind == FpKind.SignalingNaN || y.Kind == FpKind.SignalingNaN || z.Kind == FpKind.SignalingNaN || infZero) flags |= FpFlag.Invalid;
            return f.CanonicalNaN;
        }
        if (infZero) return InvalidNaN(f, ref flags);
        bool sp = (x.Sign != y.Sign) != negateProduct;
        bool sc = z.Sign != negateAddend;
        if (x.Kind == FpKind.Inf || y.Kind == FpKind.Inf)
        {
            if (z.Kind == FpKind.Inf && sc != sp) return InvalidNaN(f, ref flags);
            return (sp ? f.SignBit : 0) | f.Inf;
        }
        if (z.Kind == FpKind.Inf) return (sc ? f.SignBit : 0) | f.Inf;
        if (x.Kind == FpKind.Zero || y.Kind == FpKind.Zero)
        {
            if (z.Kind == FpKind.Zero) return Zero(f, sp == sc ? sp : ZeroSumSign(rm));
            return (c & ~f.SignBit) | (sc ? f.SignBit : 0);
        }
        UInt128 p = (UInt128)x.Mant * y.Mant;
        int ep = x.Exp + y.Exp;
        if (z.Kind == FpKind.Zero) return RoundPack(f, sp, p, ep, rm, ref flags);
        return AddExact(f, sp, p, ep, sc, z.Mant, z.Exp, rm, ref flags);
    }
}
