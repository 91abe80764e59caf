using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.Tests.Infra;
using static LiveMigration.Guest.Tests.Infra.X;

namespace LiveMigration.Guest.Tests.Cpu;

/// <summary>A extension: AMOs (W and D), LR/SC, misalignment and faults.</summary>
public class AtomicTests
{
    public static TheoryData<string, bool, ulong, ulong, ulong, ulong> Amos => new()
    {
        // op, dword, memory before, rs2, rd expected (old value), memory after
        { "swap", true, 0x1111, 0x2222, 0x1111, 0x2222 },
        { "add", true, ulong.MaxValue, 2, ulong.MaxValue, 1 },
        { "xor", true, 0xFF00, 0x0FF0, 0xFF00, 0xF0F0 },
        { "and", true, 0xFF00, 0x0FF0, 0xFF00, 0x0F00 },
        { "or", true, 0xFF00, 0x0FF0, 0xFF00, 0xFFF0 },
        { "min", true, ulong.MaxValue, 1, ulong.MaxValue, ulong.MaxValue },
        { "max", true, ulong.MaxValue, 1, ulong.MaxValue, 1 },
        { "minu", true, ulong.MaxValue, 1, ulong.MaxValue, 1 },
        { "maxu", true, ulong.MaxValue, 1, ulong.MaxValue, ulong.MaxValue },
        { "min", true, 0x8000_0000_0000_0000, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, 0x8000_0000_0000_0000 },
        // W forms: 32-bit memory, the old value sign-extended into rd, the upper word untouched.
        { "swap", false, 0xAAAA_AAAA_8000_0000, 0x1234_5678, 0xFFFF_FFFF_8000_0000, 0xAAAA_AAAA_1234_5678 },
        { "add", false, 0xAAAA_AAAA_FFFF_FFFF, 1, ulong.MaxValue, 0xAAAA_AAAA_0000_0000 },
        { "xor", false, 0x5555_5555_0000_FFFF, 0xFFFF_FFFF_FFFF_0000, 0xFFFF, 0x5555_5555_FFFF_FFFF },
        { "and", false, 0x5555_5555_F0F0_F0F0, 0xFF00_FF00, 0xFFFF_FFFF_F0F0_F0F0, 0x5555_5555_F000_F000 },
        { "or", false, 0x5555_5555_0000_0001, 0x8000_0000, 1, 0x5555_5555_8000_0001 },
        { "min", false, 0x7FFF_FFFF, 0x8000_0000, 0x7FFF_FFFF, 0x8000_0000 },
        { "max", false, 0x7FFF_FFFF, 0x8000_0000, 0x7FFF_FFFF, 0x7FFF_FFFF },
        { "minu", false, 0x7FFF_FFFF, 0x1_8000_0000, 0x7FFF_FFFF, 0x7FFF_FFFF },
        { "maxu", false, 0x7FFF_FFFF, 0x8000_0000, 0x7FFF_FFFF, 0x8000_0000 },
        { "max", false, 0x0000_0001_FFFF_FFFF, 0, ulong.MaxValue, 0x0000_0001_0000_0000 },
    };

    [Theory, MemberData(nameof(Amos))]
    public void Amo(string op, bool dword, ulong before, ulong rs2, ulong rdExpected, ulong after)
    {
        using var rig = new Rig();
        rig.WriteU64(Rig.Data, before);
        rig.Emit(Rv.Amo(Rv.AmoFunct5[op], dword, A0, A1, A2));
        rig[A1] = Rig.Data;
        rig[A2] = rs2;
        rig.Step();
        rig.AssertNoTrap();
        Assert.Equal(rdExpected.ToString("x16"), rig[A0].ToString("x16"));
        Assert.Equal(after.ToString("x16"), rig.ReadU64(Rig.Data).ToString("x16"));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LrScSucceedsWithReservation(bool dword)
    {
        using var rig = new Rig();
        rig.WriteU64(Rig.Data, 0xFFFF_FFFF_8000_0000);
        rig.Emit(dword ? Rv.LrD(A0, A1) : Rv.LrW(A0, A1), dword ? Rv.ScD(A3, A1, A2) : Rv.ScW(A3, A1, A2));
        rig[A1] = Rig.Data;
        rig[A2] = 0x1_2345_6789;
        rig.Step(2);
        Assert.Equal(0xFFFF_FFFF_8000_0000UL, rig[A0]); // lr.w sign-extends too
        Assert.Equal(0UL, rig[A3]);
        Assert.Equal(dword ? 0x1_2345_6789UL : 0xFFFF_FFFF_2345_6789UL, rig.ReadU64(Rig.Data));
    }

    [Fact]
    public void ScWithoutReservationFailsAndLeavesMemory()
    {
        using var rig = new Rig();
        rig.WriteU64(Rig.Data, 7);
        rig.Emit(Rv.ScD(A3, A1, A2));
        rig[A1] = Rig.Data;
        rig[A2] = 99;
        rig.Step();
        rig.AssertNoTrap();
        Assert.Equal(1UL, rig[A3]);
        Assert.Equal(7UL, rig.ReadU64(Rig.Data));
    }

    [Fact]
    public void ScToAnotherAddressFailsAndASecondScFails()
    {
        using var rig = new Rig();
        rig.Emit(Rv.LrD(A0, A1), Rv.ScD(A3, A4, A2), Rv.LrD(A0, A1), Rv.ScD(A3, A1, A2), Rv.ScD(A5, A1, A2));
        rig[A1] = Rig.Data;
        rig[A4] = Rig.Data + 8;
        rig[A2] = 5;
        rig.Step(2);
        Assert.Equal(1UL, rig[A3]);
        Assert.Equal(0UL, rig.ReadU64(Rig.Data + 8));
        rig.Step(3);
        Assert.Equal(0UL, rig[A3]); // fresh reservation succeeds
        Assert.Equal(1UL, rig[A5]); // the reservation was consumed
        Assert.Equal(5UL, rig.ReadU64(Rig.Data));
    }

    /// <summary>QEMU 7.2 reports misaligned AMOs and LRs as load-address-misaligned (cause 4).</summary>
    [Theory]
    [InlineData("amoadd.w", 2)]
    [InlineData("amoswap.d", 4)]
    [InlineData("lr.d", 4)]
    [InlineData("lr.w", 1)]
    public void MisalignedAtomicIsCause4(string op, int offset)
    {
        using var rig = new Rig();
        uint insn = op switch
        {
            "amoadd.w" => Rv.Amo(Rv.AmoFunct5["add"], false, A0, A1, A2),
            "amoswap.d" => Rv.Amo(Rv.AmoFunct5["swap"], true, A0, A1, A2),
            "lr.d" => Rv.LrD(A0, A1),
            _ => Rv.LrW(A0, A1),
        };
        rig.Emit(insn);
        ulong address = Rig.Data + (ulong)offset;
        rig[A1] = address;
        rig[A0] = 1234;
        rig.WriteU64(Rig.Data, 0x0102_0304_0506_0708);
        rig.Step();
        rig.AssertTrap(Cause.LoadMisaligned, Rig.Base, address);
        Assert.Equal(1234UL, rig[A0]);
        Assert.Equal(0x0102_0304_0506_0708UL, rig.ReadU64(Rig.Data));
    }

    [Fact]
    public void AmoOnUnmappedAddressIsStoreAccessFault()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Amo(Rv.AmoFunct5["add"], true, A0, A1, A2));
        rig[A1] = 0x1000;
        rig.Step();
        rig.AssertTrap(Cause.StoreAccessFault, Rig.Base, 0x1000);
    }

    [Fact]
    public void LrOnUnmappedAddressIsLoadAccessFault()
    {
        using var rig = new Rig();
        rig.Emit(Rv.LrW(A0, A1));
        rig[A1] = 0x1000;
        rig.Step();
        rig.AssertTrap(Cause.LoadAccessFault, Rig.Base, 0x1000);
    }

    [Theory]
    [InlineData(1u)] // rl
    [InlineData(2u)] // aq
    [InlineData(3u)] // aq and rl: ordering bits change nothing on one hart
    public void OrderingBitsAreAccepted(uint aqrl)
    {
        using var rig = new Rig();
        rig.WriteU64(Rig.Data, 10);
        rig.Emit(Rv.Amo(Rv.AmoFunct5["add"], true, A0, A1, A2) | (aqrl << 25),
                 Rv.LrD(A3, A1) | (aqrl << 25), Rv.ScD(A4, A1, A2) | (aqrl << 25));
        rig[A1] = Rig.Data;
        rig[A2] = 5;
        rig.Step(3);
        rig.AssertNoTrap();
        Assert.Equal(10UL, rig[A0]);
        Assert.Equal(15UL, rig[A3]);
        Assert.Equal(0UL, rig[A4]);
        Assert.Equal(5UL, rig.ReadU64(Rig.Data));
    }

    [Fact]
    public void AmoToRdX0StillWritesMemory()
    {
        using var rig = new Rig();
        rig.WriteU64(Rig.Data, 1);
        rig.Emit(Rv.Amo(Rv.AmoFunct5["or"], true, Zero, A1, A2));
        rig[A1] = Rig.Data;
        rig[A2] = 6;
        rig.Step();
        Assert.Equal(7UL, rig.ReadU64(Rig.Data));
        Assert.Equal(0UL, rig[Zero]);
    }

    [Fact]
    public void AmoWhereRdEqualsRs2UsesTheOldRs2()
    {
        using var rig = new Rig();
        rig.WriteU64(Rig.Data, 100);
        rig.Emit(Rv.Amo(Rv.AmoFunct5["add"], true, A2, A1, A2));
        rig[A1] = Rig.Data;
        rig[A2] = 5;
        rig.Step();
        Assert.Equal(100UL, rig[A2]);
        Assert.Equal(105UL, rig.ReadU64(Rig.Data));
    }
}
