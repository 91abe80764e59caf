namespace LiveMigration.Guest.Cpu.Fpu;

/// <summary>
/// The arithmetic ops per format, raw bits in and out. Round-to-nearest takes a host fast path
/// (<see cref="HostFast"/>) when it can prove the host result and flags exact; everything else is
/// <see cref="SoftFloat"/>.
/// </summary>
internal static class FpMath
{
    private static readonly FpFormat S = FpFormat.S, D = FpFormat.D;

    public static ulong AddS(ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Add(S, a, b, rm, ref fl);
    public static ulong SubS(ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Sub(S, a, b, rm, ref fl);
    public static ulong MulS(ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Mul(S, a, b, rm, ref fl);
    public static ulong DivS(ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Div(S, a, b, rm, ref fl);
    public static ulong SqrtS(ulong a, RoundingMode rm, ref uint fl) => SoftFloat.Sqrt(S, a, rm, ref fl);
    public static ulong MulAddS(ulong a, ulong b, ulong c, bool negP, bool negC, RoundingMode rm, ref uint fl) => SoftFloat.MulAdd(S, a, b, c, negP, negC, rm, ref fl);

    public static ulong AddD(ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Add(D, a, b, rm, ref fl);
    public static ulong SubD(ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Sub(D, a, b, rm, ref fl);
    public static ulong MulD(ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Mul(D, a, b, rm, ref fl);
    public static ulong DivD(ulong a, ulong b, RoundingMode rm, ref uint fl) => SoftFloat.Div(D, a, b, rm, ref fl);
    public static ulong SqrtD(ulong a, RoundingMode rm, ref uint fl) => SoftFloat.Sqrt(D, a, rm, ref fl);
    public static ulong MulAddD(ulong a, ulong b, ulong c, bool negP, bool negC, RoundingMode rm, ref uint fl) => SoftFloat.MulAdd(D, a, b, c, negP, negC, rm, ref fl);
}
