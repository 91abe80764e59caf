using LiveMigration.Guest.Tests.Infra;
using static LiveMigration.Guest.Tests.Infra.X;

namespace LiveMigration.Guest.Tests.Differential;

/// <summary>
/// Builds guest programs of random F/D instructions over special-value-rich operands in every
/// rounding mode (static rm and frm). After each op the program stores the result (f or x
/// register) and the fflags it raised (then clears them), 16 bytes per op, and prints the whole
/// record over the UART as raw bytes, so a comparison names the first op that differs.
/// </summary>
public static class FpStreams
{
    private const ulong Base = 0x8000_0000, Table = Base + 0x30000, Output = Base + 0x40000;
    private const int FpValues = 200, IntValues = 48, IntTableOffset = FpValues * 8;

    /// <summary>One op kind: how to encode it and which register files it reads and writes.</summary>
    public sealed record Spec(string Name, Func<int, int, int, int, int, uint> Encode, bool WritesX, bool ReadsX, bool HasRm);

    public static readonly Spec[] Ops = BuildSpecs();

    private static Spec[] BuildSpecs()
    {
        var l = new List<Spec>();
        foreach (var (fmt, sfx) in new[] { (0u, "s"), (1u, "d") })
        {
            foreach (var (name, f7) in new[] { ("fadd", 0x00u), ("fsub", 0x04u), ("fmul", 0x08u), ("fdiv", 0x0Cu) })
                l.Add(new($"{name}.{sfx}", (rd, a, b, c, rm) => RvFp.Op(f7 | fmt, rd, a, b, rm), false, false, true));
            l.Add(new($"fsqrt.{sfx}", (rd, a, b, c, rm) => RvFp.Op(0x2C | fmt, rd, a, 0, rm), false, false, true));
            string[] fmaNames = ["fmadd", "fmsub", "fnmsub", "fnmadd"];
            for (int i = 0; i < 4; i++)
            {
                uint opc = RvFp.FmaOpcodes[i];
                l.Add(new($"{fmaNames[i]}.{sfx}", (rd, a, b, c, rm) => RvFp.Fma(opc, (int)fmt, rd, a, b, c, rm), false, false, true));
            }
            string[] sgnj = ["fsgnj", "fsgnjn", "fsgnjx"];
            for (int i = 0; i < 3; i++) { int k = i; l.Add(new($"{sgnj[i]}.{sfx}", (rd, a, b, c, rm) => RvFp.Op(0x10 | fmt, rd, a, b, k), false, false, false)); }
            l.Add(new($"fmin.{sfx}", (rd, a, b, c, rm) => RvFp.Op(0x14 | fmt, rd, a, b, 0), false, false, false));
            l.Add(new($"fmax.{sfx}", (rd, a, b, c, rm) => RvFp.Op(0x14 | fmt, rd, a, b, 1), false, false, false));
            string[] cmp = ["fle", "flt", "feq"];
            for (int i = 0; i < 3; i++) { int k = i; l.Add(new($"{cmp[i]}.{sfx}", (rd, a, b, c, rm) => RvFp.Op(0x50 | fmt, rd, a, b, k), true, false, false)); }
            l.Add(new($"fclass.{sfx}", (rd, a, b, c, rm) => RvFp.Op(0x70 | fmt, rd, a, 0, 1), true, false, false));
            string[] ints = ["w", "wu", "l", "lu"];
            for (int i = 0; i < 4; i++)
            {
                int k = i;
                l.Add(new($"fcvt.{ints[i]}.{sfx}", (rd, a, b, c, rm) => RvFp.Op(0x60 | fmt, rd, a, k, rm), true, false, true));
                l.Add(new($"fcvt.{sfx}.{ints[i]}", (rd, a, b, c, rm) => RvFp.Op(0x68 | fmt, rd, a, k, rm), false, true, true));
            }
            l.Add(new(fmt == 0 ? "fmv.x.w" : "fmv.x.d", (rd, a, b, c, rm) => RvFp.Op(0x70 | fmt, rd, a, 0, 0), true, false, false));
            l.Add(new(fmt == 0 ? "fmv.w.x" : "fmv.d.x", (rd, a, b, c, rm) => RvFp.Op(0x78 | fmt, rd, a, 0, 0), false, true, false));
        }
        l.Add(new("fcvt.s.d", (rd, a, b, c, rm) => RvFp.Op(0x20, rd, a, 1, rm), false, false, true));
        l.Add(new("fcvt.d.s", (rd, a, b, c, rm) => RvFp.Op(0x21, rd, a, 0, rm), false, false, true));
        return [.. l];
    }

    /// <summary>A double rich in edge cases.</summary>
    public static ulong SpecialD(Random r)
    {
        ulong sign = r.Next(2) == 0 ? 0 : 1UL << 63;
        ulong frac = (ulong)r.NextInt64() & ((1UL << 52) - 1);
        ulong E(long e) => (ulong)e << 52;
        return r.Next(13) switch
        {
            0 => sign,
            1 => sign | E(2047),
            2 => r.Next(4) switch { 0 => 0x7FF8_0000_0000_0000, 1 => 0x7FF0_0000_0000_0001 | (frac >> 1), 2 => 0x7FF8_0000_0000_0123 | sign, _ => sign | E(2047) | (frac | 1) },
            3 => sign | (r.Next(3) switch { 0 => 1UL, 1 => (1UL << 52) - 1, _ => frac >> r.Next(52) }),
            4 => sign | E(r.Next(1, 4)) | frac,
            5 => sign | E(r.Next(2043, 2047)) | (r.Next(2) == 0 ? (1UL << 52) - 1 : frac),
            6 => sign | BitConverter.DoubleToUInt64Bits(r.Next(-8, 9) * 0.5),
            7 => BitConverter.DoubleToUInt64Bits(r.Next(10) switch
            {
                0 => 2147483648.0, 1 => 2147483647.0, 2 => -2147483648.0, 3 => -2147483649.0, 4 => 4294967296.0,
                5 => 4294967295.5, 6 => 9223372036854775808.0, 7 => -9223372036854775808.0, 8 => 18446744073709551616.0,
                _ => 9007199254740993.0 * (r.Next(2) * 2 - 1),
            }) ^ (r.Next(8) == 0 ? 1UL : 0),
            8 => sign | E(r.Next(0, 2047)) | frac,
            9 => sign | E(1023 + r.Next(-64, 65)) | frac,
            10 => sign | E(1023 + r.Next(-60, 61)) | ((1UL << 52) >> r.Next(1, 53)) | (r.Next(2) == 0 ? 1UL : 0),
            11 => sign | E(r.Next(2) == 0 ? r.Next(1, 60) : r.Next(990, 1060)) | frac, // products near under/overflow
            _ => (ulong)r.NextInt64() ^ ((ulong)r.Next() << 63),
        };
    }

    /// <summary>A single (boxed), with an improperly boxed value now and then.</summary>
    public static ulong SpecialS(Random r)
    {
        uint sign = r.Next(2) == 0 ? 0 : 1u << 31;
        uint frac = (uint)r.Next() & ((1u << 23) - 1);
        uint E(int e) => (uint)e << 23;
        uint v = r.Next(13) switch
        {
            0 => sign,
            1 => sign | E(255),
            2 => r.Next(4) switch { 0 => 0x7FC0_0000u, 1 => 0x7F80_0001u | (frac >> 1), 2 => 0x7FC0_0123u | sign, _ => sign | E(255) | (frac | 1) },
            3 => sign | (r.Next(3) switch { 0 => 1u, 1 => (1u << 23) - 1, _ => frac >> r.Next(23) }),
            4 => sign | E(r.Next(1, 4)) | frac,
            5 => sign | E(r.Next(251, 255)) | (r.Next(2) == 0 ? (1u << 23) - 1 : frac),
            6 => sign | BitConverter.SingleToUInt32Bits(r.Next(-8, 9) * 0.5f),
            7 => BitConverter.SingleToUInt32Bits(r.Next(8) switch
            {
                0 => 2147483648f, 1 => -2147483648f, 2 => 4294967296f, 3 => 9223372036854775808f, 4 => -9223372036854775808f,
                5 => 18446744073709551616f, 6 => 16777217f, _ => 2147483520f,
            }) ^ (r.Next(8) == 0 ? 1u : 0),
            8 => sign | E(r.Next(0, 255)) | frac,
            9 => sign | E(127 + r.Next(-30, 31)) | frac,
            10 => sign | E(127 + r.Next(-20, 21)) | ((1u << 23) >> r.Next(1, 24)) | (uint)r.Next(2),
            11 => sign | E(r.Next(2) == 0 ? r.Next(1, 30) : r.Next(100, 150)) | frac,
            _ => (uint)r.Next() ^ ((uint)r.Next(2) << 31),
        };
        if (r.Next(16) == 0) return r.Next(2) == 0 ? v : ((ulong)(uint)r.Next() << 32) | v; // not NaN-boxed
        return 0xFFFF_FFFF_0000_0000 | v;
    }

    public static ulong SpecialInt(Random r) => r.Next(12) switch
    {
        0 => 0,
        1 => 1,
        2 => ulong.MaxValue,
        3 => int.MaxValue,
        4 => unchecked((ulong)(long)int.MinValue),
        5 => uint.MaxValue,
        6 => long.MaxValue,
        7 => 1UL << 63,
        8 => (ulong)(long)r.Next(-100, 100),
        9 => (1UL << r.Next(20, 64)) + (ulong)r.Next(-3, 4),
        10 => (ulong)(long)(int)(uint)r.Next() | (r.Next(2) == 0 ? 0 : 0x8000_0000UL),
        _ => (ulong)r.NextInt64() ^ ((ulong)r.Next(2) << 63),
    };

    /// <summary>
    /// A stream of <paramref name="count"/> ops, run <paramref name="loops"/> times over (hot enough to
    /// be compiled from the second pass on when loops exceed the block cache's threshold).
    /// </summary>
    public static byte[] Build(int seed, int count, out string[] listing, int loops = 1)
    {
        var rng = new Random(seed);
        var code = new List<byte>();
        var names = new List<string>();
        void W(uint insn) => code.AddRange(BitConverter.GetBytes(insn));
        ulong Here() => Base + (ulong)code.Count;
        void La(int rd, ulong address)
        {
            long off = (long)(address - Here());
            long hi = (off + 0x800) & ~0xFFFL;
            W(Rv.Auipc(rd, hi));
            W(Rv.Addi(rd, rd, off - hi));
        }
        void Li(int rd, long v)
        {
            long hi = (v + 0x800) & ~0xFFFL;
            W(Rv.Lui(rd, hi));
            W(Rv.Addi(rd, rd, v - hi));
        }

        Li(5, 0x6000);
        W(Rv.Csrrs(0, 0x300, 5));                          // mstatus.FS = Dirty (QEMU starts with FS off)
        La(29, Table);
        for (int f = 0; f < 32; f++) W(RvFp.Fld(f, 29, rng.Next(FpValues) * 8));
        for (int x = 1; x <= 27; x++) W(Rv.Ld(x, 29, IntTableOffset + rng.Next(IntValues) * 8));
        La(31, Output);
        W(Rv.Csrw(RvFp.Fcsr, Zero));
        W(Rv.Addi(28, Zero, loops));                        // x28: passes left
        ulong loopStart = Here();
        for (int i = 0; i < count; i++)
        {
            if (rng.Next(8) == 0) W(Rv.Csrrwi(0, RvFp.Frm, rng.Next(5)));
            if (rng.Next(3) == 0) W(RvFp.Fld(rng.Next(32), 29, rng.Next(FpValues) * 8));
            if (rng.Next(6) == 0) W(Rv.Ld(rng.Next(1, 28), 29, IntTableOffset + rng.Next(IntValues) * 8));
            var op = Ops[rng.Next(Ops.Length)];
            int rd = op.WritesX ? rng.Next(1, 28) : rng.Next(32);
            int rs1 = op.ReadsX ? rng.Next(28) : rng.Next(32);
            int rm = rng.Next(7) switch { 5 or 6 => RvFp.Dyn, int m => m };
            W(op.Encode(rd, rs1, rng.Next(32), rng.Next(32), op.HasRm ? rm : 0));
            names.Add($"{op.Name} rd={rd} rs1={rs1} rm={(op.HasRm ? rm : -1)}");
            W(op.WritesX ? Rv.Sd(rd, 31, 0) : RvFp.Fsd(rd, 31, 0));
            W(Rv.Csrrw(30, RvFp.Fflags, Zero));
            W(Rv.Sd(30, 31, 8));
            W(Rv.Addi(31, 31, 16));
        }
        W(Rv.Addi(28, 28, -1));
        W(Rv.Beq(28, Zero, 8));
        W(Rv.Jal(Zero, (long)(loopStart - Here())));
        La(31, Output);
        Li(2, count * loops * 16);
        HandWritten.PrintAndPass(code, Base);
        if (Here() >= Table) throw new InvalidOperationException("program too long for its layout");

        var image = new byte[Table - Base + IntTableOffset + IntValues * 8];
        code.CopyTo(image);
        for (int i = 0; i < FpValues; i++)
            BitConverter.GetBytes(i < FpValues / 2 ? SpecialD(rng) : SpecialS(rng)).CopyTo(image, (int)(Table - Base) + i * 8);
        for (int i = 0; i < IntValues; i++)
            BitConverter.GetBytes(SpecialInt(rng)).CopyTo(image, (int)(Table - Base) + IntTableOffset + i * 8);
        listing = [.. Enumerable.Repeat(names, loops).SelectMany(n => n)];
        return new ElfBuilder().Segment(Base, image).Build();
    }
}
