using LiveMigration.Guest.Cpu.Fpu;
using LiveMigration.Guest.Tests.Differential;

namespace LiveMigration.Guest.Tests.Cpu;

/// <summary>
/// The host fast path for round-to-nearest (<see cref="FpMath"/>) must give the same bits and flags as
/// the exact <see cref="SoftFloat"/> on every input, with NX clear or already set on entry.
/// </summary>
public class FpFastPathTests
{
    private delegate ulong Binary(ulong a, ulong b, RoundingMode rm, ref uint fl);

    private static readonly FpFormat S = FpFormat.S, D = FpFormat.D;

    private static IEnumerable<(string Name, FpFormat F, Binary Fast, Binary Soft)> Binaries()
    {
        yield return ("add.d", D, FpMath.AddD, (ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Add(D, a, b, rm, ref fl));
        yield return ("sub.d", D, FpMath.SubD, (ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Sub(D, a, b, rm, ref fl));
        yield return ("mul.d", D, FpMath.MulD, (ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Mul(D, a, b, rm, ref fl));
        yield return ("div.d", D, FpMath.DivD, (ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Div(D, a, b, rm, ref fl));
        yield return ("add.s", S, FpMath.AddS, (ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Add(S, a, b, rm, ref fl));
        yield return ("sub.s", S, FpMath.SubS, (ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Sub(S, a, b, rm, ref fl));
        yield return ("mul.s", S, FpMath.MulS, (ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Mul(S, a, b, rm, ref fl));
        yield return ("div.s", S, FpMath.DivS, (ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Div(S, a, b, rm, ref fl));
    }

    private static ulong Value(FpFormat f, Random r) => f == D ? FpStreams.SpecialD(r) : (uint)FpStreams.SpecialS(r);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void FastPathEqualsSoftFloat(int seed)
    {
        var rng = new Random(seed);
        foreach (var (name, f, fast, soft) in Binaries())
            for (int i = 0; i < 40_000; i++)
            {
                ulong a = Value(f, rng), b = Value(f, rng);
                // Nearby operands too, so cancellation and exact results are common.
                if (rng.Next(4) == 0) b = a ^ (ulong)rng.Next(1 << 8);
                foreach (uint entry in new[] { 0u, FpFlag.Inexact })
                {
                    uint f1 = entry, f2 = entry;
                    ulong r1 = fast(a, b, RoundingMode.NearestEven, ref f1), r2 = soft(a, b, RoundingMode.NearestEven, ref f2);
                    Assert.True(r1 == r2 && f1 == f2, $"{name}(0x{a:x}, 0x{b:x}) entry {entry}: fast 0x{r1:x}/{f1:x}, exact 0x{r2:x}/{f2:x}");
                }
            }
    }

    [Theory]
    [InlineData(4)]
    [InlineData(5)]
    public void FastSqrtAndFmaEqualSoftFloat(int seed)
    {
        var rng = new Random(seed);
        for (int i = 0; i < 60_000; i++)
        {
            foreach (var f in new[] { S, D })
            {
                ulong a = Value(f, rng), b = Value(f, rng), c = Value(f, rng);
                uint ignored = 0;
                // An addend near -(a·b), so the sum cancels.
                if (rng.Next(3) == 0) c = SoftFloat.Mul(f, a, b, RoundingMode.NearestEven, ref ignored) ^ f.SignBit ^ (ulong)rng.Next(4);
                bool np = rng.Next(2) == 0, nc = rng.Next(2) == 0;
                foreach (uint entry in new[] { 0u, FpFlag.Inexact })
                {
                    uint f1 = entry, f2 = entry;
                    ulong r1 = f == D ? FpMath.MulAddD(a, b, c, np, nc, RoundingMode.NearestEven, ref f1) : FpMath.MulAddS(a, b, c, np, nc, RoundingMode.NearestEven, ref f1);
                    ulong r2 = SoftFloat.MulAdd(f, a, b, c, np, nc, RoundingMode.NearestEven, ref f2);
                    Assert.True(r1 == r2 && f1 == f2, $"fma (0x{a:x}, 0x{b:x}, 0x{c:x}, {np}, {nc}) entry {entry}: fast 0x{r1:x}/{f1:x}, exact 0x{r2:x}/{f2:x}");
                    f1 = entry; f2 = entry;
                    r1 = f == D ? FpMath.SqrtD(a, RoundingMode.NearestEven, ref f1) : FpMath.SqrtS(a, RoundingMode.NearestEven, ref f1);
                    r2 = SoftFloat.Sqrt(f, a, RoundingMode.NearestEven, ref f2);
                    Assert.True(r1 == r2 && f1 == f2, $"sqrt(0x{a:x}) entry {entry}: fast 0x{r1:x}/{f1:x}, exact 0x{r2:x}/{f2:x}");
                }
            }
        }
    }
}
