using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.Tests.Infra;
using static LiveMigration.Guest.Tests.Infra.X;

namespace LiveMigration.Guest.Tests.Cpu;

/// <summary>F/D instructions one at a time: decoding, NaN-boxing, rounding-mode selection, fflags, CSRs, traps.</summary>
public unsafe class FpInstructionTests
{
    private const ulong Box = 0xFFFF_FFFF_0000_0000;
    private const uint NX = 1, UF = 2, OF = 4, DZ = 8, NV = 16;

    private static ulong D(double v) => BitConverter.DoubleToUInt64Bits(v);
    private static ulong S(float v) => Box | BitConverter.SingleToUInt32Bits(v);

    /// <summary>Runs one instruction with f1, f2, f3 and x11 set; returns the rig (f/x state to inspect).</summary>
    private static Rig Run(uint insn, ulong f1 = 0, ulong f2 = 0, ulong f3 = 0, ulong x11 = 0, uint fcsr = 0)
    {
        var rig = FpRig();
        rig.Emit(insn);
        ref var c = ref rig.M.Cpu;
        c.F[1] = f1; c.F[2] = f2; c.F[3] = f3; c.Fcsr = fcsr;
        rig[A1] = x11;
        rig.Step();
        return rig;
    }

    /// <summary>A rig with mstatus.FS on: reset leaves it Off, where every FP instruction is illegal.</summary>
    private static Rig FpRig()
    {
        var rig = new Rig();
        rig.M.Cpu.Mstatus |= Mstatus.FS;
        return rig;
    }

    [Fact]
    public void FpInstructionsAreIllegalWhileFsIsOff()
    {
        using var rig = new Rig();
        uint insn = RvFp.FaddD(4, 1, 2, RvFp.Rne);
        rig.Emit(insn);
        rig.Step();
        rig.AssertTrap(Cause.IllegalInstruction, Rig.Base, insn);
    }

    private static ulong F(Rig r, int i) => r.M.Cpu.F[i];
    private static uint Flags(Rig r) => r.M.Cpu.Fcsr & 0x1F;

    [Fact]
    public void AddDoubleRoundsAndFlags()
    {
        using var r = Run(RvFp.FaddD(4, 1, 2, RvFp.Rne), D(1.0), D(Math.Pow(2, -53)));
        Assert.Equal(D(1.0), F(r, 4)); // a tie: to even
        Assert.Equal(NX, Flags(r));
        using var up = Run(RvFp.FaddD(4, 1, 2, RvFp.Rup), D(1.0), D(Math.Pow(2, -53)));
        Assert.Equal(D(1.0) + 1, F(up, 4));
        using var mm = Run(RvFp.FaddD(4, 1, 2, RvFp.Rmm), D(1.0), D(Math.Pow(2, -53)));
        Assert.Equal(D(1.0) + 1, F(mm, 4)); // a tie: away from zero
        using var dn = Run(RvFp.FaddD(4, 1, 2, RvFp.Rdn), D(-1.0), D(-Math.Pow(2, -60)));
        Assert.Equal(D(-1.0) + 1, F(dn, 4));
        using var tz = Run(RvFp.FaddD(4, 1, 2, RvFp.Rtz), D(-1.0), D(-Math.Pow(2, -60)));
        Assert.Equal(D(-1.0), F(tz, 4));
    }

    [Fact]
    public void DynamicRoundingModeComesFromFrm()
    {
        using var r = Run(RvFp.FaddD(4, 1, 2, RvFp.Dyn), D(1.0), D(Math.Pow(2, -60)), fcsr: 3 << 5);
        Assert.Equal(D(1.0) + 1, F(r, 4));
        Assert.Equal(NX, Flags(r));
        Assert.Equal(3u << 5 | NX, r.M.Cpu.Fcsr);
    }

    [Theory]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    public void ReservedFrmWithDynamicRmIsIllegal(int frm)
    {
        uint insn = RvFp.FaddD(4, 1, 2, RvFp.Dyn);
        using var r = Run(insn, D(1.0), D(2.0), fcsr: (uint)frm << 5);
        r.AssertTrap(Cause.IllegalInstruction, Rig.Base, insn);
        Assert.Equal(0UL, F(r, 4));
    }

    [Theory]
    [InlineData(5)]
    [InlineData(6)]
    public void ReservedStaticRmIsIllegal(int rm)
    {
        uint insn = RvFp.FaddS(4, 1, 2, rm);
        using var r = Run(insn, S(1f), S(2f));
        r.AssertTrap(Cause.IllegalInstruction, Rig.Base, insn);
    }

    [Fact]
    public void ImproperlyBoxedSingleReadsAsCanonicalNaN()
    {
        using var r = Run(RvFp.FaddS(4, 1, 2, RvFp.Rne), 0x0000_0000_3F80_0000, S(1f));
        Assert.Equal(Box | 0x7FC0_0000, F(r, 4));
        Assert.Equal(0u, Flags(r)); // the canonical NaN is quiet
        using var ok = Run(RvFp.FaddS(4, 1, 2, RvFp.Rne), S(1f), S(2f));
        Assert.Equal(S(3f), F(ok, 4));
    }

    [Fact]
    public void SignalingNaNRaisesInvalidAndGivesCanonicalNaN()
    {
        using var r = Run(RvFp.FaddD(4, 1, 2, RvFp.Rne), 0x7FF0_0000_0000_0001, D(1.0));
        Assert.Equal(0x7FF8_0000_0000_0000UL, F(r, 4));
        Assert.Equal(NV, Flags(r));
    }

    [Fact]
    public void DivisionByZeroAndOverflowAndUnderflow()
    {
        using var dz = Run(RvFp.Op(0x0D, 4, 1, 2, RvFp.Rne), D(1.0), D(-0.0));
        Assert.Equal(D(double.NegativeInfinity), F(dz, 4));
        Assert.Equal(DZ, Flags(dz));
        using var of = Run(RvFp.Op(0x09, 4, 1, 2, RvFp.Rtz), D(double.MaxValue), D(2.0));
        Assert.Equal(D(double.MaxValue), F(of, 4)); // toward zero: the largest finite
        Assert.Equal(OF | NX, Flags(of));
        using var uf = Run(RvFp.Op(0x09, 4, 1, 2, RvFp.Rne), D(Math.Pow(2, -1000)), D(Math.Pow(2, -60) * (1 + Math.Pow(2, -52))));
        Assert.Equal(UF | NX, Flags(uf));
        // Exact subnormal result: tiny but exact, so no underflow.
        using var exact = Run(RvFp.Op(0x09, 4, 1, 2, RvFp.Rne), D(Math.Pow(2, -1000)), D(Math.Pow(2, -60)));
        Assert.Equal(D(Math.Pow(2, -1060)), F(exact, 4));
        Assert.Equal(0u, Flags(exact));
    }

    [Fact]
    public void TininessIsDetectedAfterRounding()
    {
        // 2^-1022 (1 - 2^-53) is below the smallest normal even when rounded with unbounded exponent, so
        // it is tiny (UF) although rounding to the subnormal grid gives the smallest normal itself.
        double x = 1 - Math.Pow(2, -53), y = Math.Pow(2, -1022);
        using var r = Run(RvFp.Op(0x09, 4, 1, 2, RvFp.Rne), D(x), D(y));
        Assert.Equal(0x0010_0000_0000_0000UL, F(r, 4));
        Assert.Equal(UF | NX, Flags(r));
    }

    [Fact]
    public void FusedMultiplyAddRoundsOnce()
    {
        double a = 1 + Math.Pow(2, -30), c = -(1 + Math.Pow(2, -29));
        using var r = Run(RvFp.Fma(0x43, 1, 4, 1, 1, 3, RvFp.Rne), D(a), 0, D(c));
        Assert.Equal(D(Math.Pow(2, -60)), F(r, 4)); // a*a + c exactly; a separate multiply would lose it
        Assert.Equal(0u, Flags(r));
        // fma.s: a single-precision fma is not a double fma rounded to single.
        float fa = 1 + MathF.Pow(2, -12), fc = -(1 + MathF.Pow(2, -11));
        using var s = Run(RvFp.Fma(0x43, 0, 4, 1, 1, 3, RvFp.Rne), S(fa), 0, S(fc));
        Assert.Equal(S(MathF.Pow(2, -24)), F(s, 4));
        // Inf * 0 + qNaN is invalid on RISC-V.
        using var iz = Run(RvFp.Fma(0x43, 1, 4, 1, 2, 3, RvFp.Rne), D(double.PositiveInfinity), D(0.0), 0x7FF8_0000_0000_0000);
        Assert.Equal(NV, Flags(iz));
    }

    [Fact]
    public void MinMaxTreatNegativeZeroAsSmallerAndPreferNumbers()
    {
        using var min = Run(RvFp.Op(0x15, 4, 1, 2, 0), D(0.0), D(-0.0));
        Assert.Equal(D(-0.0), F(min, 4));
        using var max = Run(RvFp.Op(0x15, 4, 1, 2, 1), D(-0.0), D(0.0));
        Assert.Equal(D(0.0), F(max, 4));
        using var qnan = Run(RvFp.Op(0x15, 4, 1, 2, 0), 0x7FF8_0000_0000_0000, D(3.0));
        Assert.Equal(D(3.0), F(qnan, 4));
        Assert.Equal(0u, Flags(qnan));
        using var snan = Run(RvFp.Op(0x15, 4, 1, 2, 1), 0x7FF0_0000_0000_0001, D(3.0));
        Assert.Equal(D(3.0), F(snan, 4));
        Assert.Equal(NV, Flags(snan));
        using var both = Run(RvFp.Op(0x14, 4, 1, 2, 0), S(float.NaN) | 1, Box | 0x7F80_0001);
        Assert.Equal(Box | 0x7FC0_0000, F(both, 4));
    }

    public static TheoryData<string, uint, ulong, ulong, uint> Conversions => new()
    {
        // name, insn (rd = a0, rs1 = f1), f1, expected a0, expected flags
        { "fcvt.w.d 2.5 rne", RvFp.Op(0x61, A0, 1, 0, RvFp.Rne), D(2.5), 2, NX },
        { "fcvt.w.d -2.5 rmm", RvFp.Op(0x61, A0, 1, 0, RvFp.Rmm), D(-2.5), unchecked((ulong)-3L), NX },
        { "fcvt.w.d 2^31", RvFp.Op(0x61, A0, 1, 0, RvFp.Rtz), D(2147483648.0), int.MaxValue, NV },
        { "fcvt.w.d -2^31", RvFp.Op(0x61, A0, 1, 0, RvFp.Rtz), D(-2147483648.0), unchecked((ulong)(long)int.MinValue), 0 },
        { "fcvt.w.d NaN", RvFp.Op(0x61, A0, 1, 0, RvFp.Rtz), 0xFFF8_0000_0000_0000, int.MaxValue, NV },
        { "fcvt.w.d -inf", RvFp.Op(0x61, A0, 1, 0, RvFp.Rtz), D(double.NegativeInfinity), unchecked((ulong)(long)int.MinValue), NV },
        { "fcvt.wu.d -0.5 rtz", RvFp.Op(0x61, A0, 1, 1, RvFp.Rtz), D(-0.5), 0, NX },
        { "fcvt.wu.d -1", RvFp.Op(0x61, A0, 1, 1, RvFp.Rtz), D(-1.0), 0, NV },
        { "fcvt.wu.d 2^32-1 sign-extends", RvFp.Op(0x61, A0, 1, 1, RvFp.Rtz), D(4294967295.0), ulong.MaxValue, 0 },
        { "fcvt.wu.d NaN", RvFp.Op(0x61, A0, 1, 1, RvFp.Rtz), 0x7FF8_0000_0000_0000, ulong.MaxValue, NV },
        { "fcvt.l.d 2^63", RvFp.Op(0x61, A0, 1, 2, RvFp.Rne), D(9223372036854775808.0), long.MaxValue, NV },
        { "fcvt.lu.d 2^64", RvFp.Op(0x61, A0, 1, 3, RvFp.Rne), D(18446744073709551616.0), ulong.MaxValue, NV },
        { "fcvt.lu.d -inf", RvFp.Op(0x61, A0, 1, 3, RvFp.Rne), D(double.NegativeInfinity), 0, NV },
        { "fcvt.l.s -1.5 rdn", RvFp.Op(0x60, A0, 1, 2, RvFp.Rdn), S(-1.5f), unchecked((ulong)-2L), NX },
        { "fcvt.lu.s 1.5 rup", RvFp.Op(0x60, A0, 1, 3, RvFp.Rup), S(1.5f), 2, NX },
        { "fclass.d -subnormal", RvFp.Op(0x71, A0, 1, 0, 1), 0x8000_0000_0000_0001, 1 << 2, 0 },
        { "fclass.d sNaN", RvFp.Op(0x71, A0, 1, 0, 1), 0x7FF0_0000_0000_0001, 1 << 8, 0 },
        { "fclass.s +inf", RvFp.Op(0x70, A0, 1, 0, 1), S(float.PositiveInfinity), 1 << 7, 0 },
        { "fclass.s unboxed", RvFp.Op(0x70, A0, 1, 0, 1), 0x3F80_0000, 1 << 9, 0 },
        { "fmv.x.w sign-extends, no box check", RvFp.FmvXW(A0, 1), 0x1234_5678_8000_0000, 0xFFFF_FFFF_8000_0000, 0 },
        { "feq.d +0 -0", RvFp.Op(0x51, A0, 1, 1, 2), D(0.0), 1, 0 },
        { "flt.d qNaN signals", RvFp.Op(0x51, A0, 1, 1, 1), 0x7FF8_0000_0000_0000, 0, NV },
        { "feq.d qNaN is quiet", RvFp.Op(0x51, A0, 1, 1, 2), 0x7FF8_0000_0000_0000, 0, 0 },
    };

    [Theory, MemberData(nameof(Conversions))]
    public void ConversionsAndClassesToX(string name, uint insn, ulong f1, ulong expected, uint flags)
    {
        using var r = Run(insn, f1);
        Assert.True(expected == r[A0], $"{name}: 0x{r[A0]:x16}");
        Assert.True(flags == Flags(r), $"{name}: flags 0x{Flags(r):x2}");
    }

    [Fact]
    public void IntegerToFloatRoundsAndBoxes()
    {
        using var r = Run(RvFp.Op(0x68, 4, A1, 2, RvFp.Rne), x11: 16777217); // fcvt.s.l
        Assert.Equal(S(16777216f), F(r, 4));
        Assert.Equal(NX, Flags(r));
        using var wu = Run(RvFp.Op(0x69, 4, A1, 1, RvFp.Rne), x11: 0xFFFF_FFFF_FFFF_FFFF); // fcvt.d.wu uses the low 32 bits
        Assert.Equal(D(4294967295.0), F(wu, 4));
        using var mv = Run(RvFp.FmvWX(4, A1), x11: 0xDEAD_BEEF_3F80_0000);
        Assert.Equal(S(1f), F(mv, 4));
    }

    [Fact]
    public void SignInjectionUsesUnboxedOperands()
    {
        using var r = Run(RvFp.Op(0x10, 4, 1, 2, 1), S(1f), S(2f)); // fsgnjn.s
        Assert.Equal(S(-1f), F(r, 4));
        using var bad = Run(RvFp.Op(0x10, 4, 1, 2, 0), 0x3F80_0000, S(-2f)); // unboxed rs1 is the canonical NaN
        Assert.Equal(Box | 0xFFC0_0000, F(bad, 4));
        using var x = Run(RvFp.Op(0x11, 4, 1, 2, 2), D(-3.0), D(-1.0)); // fsgnjx.d
        Assert.Equal(D(3.0), F(x, 4));
    }

    [Fact]
    public void FcsrFflagsAndFrmAreViewsOfOneRegister()
    {
        using var rig = FpRig();
        rig.Emit(
            Rv.Addi(A1, Zero, 0xFF), Rv.Csrrw(A2, RvFp.Fcsr, A1),
            Rv.Csrr(A3, RvFp.Fflags), Rv.Csrr(A4, RvFp.Frm),
            Rv.Csrrwi(A5, RvFp.Frm, 2), Rv.Csrr(A6, RvFp.Fcsr),
            Rv.Csrrci(0, RvFp.Fflags, 1), Rv.Csrr(A7, RvFp.Fcsr));
        rig.Step(8);
        rig.AssertNoTrap();
        Assert.Equal(0UL, rig[A2]);
        Assert.Equal(0x1FUL, rig[A3]);
        Assert.Equal(7UL, rig[A4]);
        Assert.Equal(7UL, rig[A5]);
        Assert.Equal(0x5FUL, rig[A6]);
        Assert.Equal(0x5EUL, rig[A7]);
    }

    [Fact]
    public void LoadsAndStoresIncludingCompressedForms()
    {
        using var rig = FpRig();
        rig.WriteU64(Rig.Data, 0x4008_0000_0000_0000); // 3.0
        rig.WriteU64(Rig.Data + 8, 0x1111_2222_4040_0000); // 3.0f in the low word
        rig[A0] = Rig.Data;
        rig[Sp] = Rig.Data;
        rig.Emit(RvFp.Fld(1, A0, 0), RvFp.Flw(2, A0, 8), RvFp.Fsd(1, A0, 16), RvFp.Fsw(2, A0, 24));
        rig.EmitC(RvFp.CFld(8, A0, 0), RvFp.CFsd(8, A0, 32), RvFp.CFldsp(0, 8), RvFp.CFsdsp(0, 40));
        rig.Step(8);
        rig.AssertNoTrap();
        ref var c = ref rig.M.Cpu;
        Assert.Equal(0x4008_0000_0000_0000UL, c.F[1]);
        Assert.Equal(Box | 0x4040_0000, c.F[2]);
        Assert.Equal(0x4008_0000_0000_0000UL, rig.ReadU64(Rig.Data + 16));
        Assert.Equal(0x4040_0000UL, rig.ReadU64(Rig.Data + 24)); // fsw writes the low 32 bits only
        Assert.Equal(0x4008_0000_0000_0000UL, c.F[8]);
        Assert.Equal(0x4008_0000_0000_0000UL, rig.ReadU64(Rig.Data + 32));
        Assert.Equal(0x1111_2222_4040_0000UL, c.F[0]); // f0 is a real register
        Assert.Equal(0x1111_2222_4040_0000UL, rig.ReadU64(Rig.Data + 40));
    }

    [Fact]
    public void FpLoadOutsideRamIsAnAccessFault()
    {
        using var rig = FpRig();
        rig[A0] = 0x10;
        uint insn = RvFp.Fld(1, A0, 0);
        rig.Emit(insn);
        rig.Step();
        rig.AssertTrap(Cause.LoadAccessFault, Rig.Base, 0x10);
    }
}
