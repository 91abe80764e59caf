using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.Tests.Infra;
using static LiveMigration.Guest.Tests.Infra.X;

namespace LiveMigration.Guest.Tests.Cpu;

/// <summary>Loads and stores: extension, misalignment (no trap on RAM, as QEMU 7.2), access faults.</summary>
public class LoadStoreTests
{
    private static readonly byte[] Pattern = [0x81, 0x92, 0xA3, 0xB4, 0xC5, 0xD6, 0xE7, 0xF8, 0x09, 0x1A, 0x2B, 0x3C, 0x4D, 0x5E, 0x6F, 0x70];

    public static TheoryData<string, uint, int, ulong> Loads => new()
    {
        { "lb", Rv.Lb(A0, A1, 0), 0, 0xFFFF_FFFF_FFFF_FF81 },
        { "lbu", Rv.Lbu(A0, A1, 0), 0, 0x81 },
        { "lb positive", Rv.Lb(A0, A1, 0), 8, 0x09 },
        { "lh", Rv.Lh(A0, A1, 0), 0, 0xFFFF_FFFF_FFFF_9281 },
        { "lhu", Rv.Lhu(A0, A1, 0), 0, 0x9281 },
        { "lw", Rv.Lw(A0, A1, 0), 0, 0xFFFF_FFFF_B4A3_9281 },
        { "lwu", Rv.Lwu(A0, A1, 0), 0, 0xB4A3_9281 },
        { "lw positive", Rv.Lw(A0, A1, 0), 8, 0x3C2B_1A09 },
        { "ld", Rv.Ld(A0, A1, 0), 0, 0xF8E7_D6C5_B4A3_9281 },
        // Misaligned accesses read the bytes in order and do not trap.
        { "lh +1", Rv.Lh(A0, A1, 0), 1, 0xFFFF_FFFF_FFFF_A392 },
        { "lhu +7", Rv.Lhu(A0, A1, 0), 7, 0x09F8 },
        { "lw +3", Rv.Lw(A0, A1, 0), 3, 0xFFFF_FFFF_E7D6_C5B4 },
        { "lwu +6", Rv.Lwu(A0, A1, 0), 6, 0x1A09_F8E7 },
        { "ld +1", Rv.Ld(A0, A1, 0), 1, 0x09F8_E7D6_C5B4_A392 },
        { "ld +7", Rv.Ld(A0, A1, 0), 7, 0x6F5E_4D3C_2B1A_09F8 },
        { "negative offset", Rv.Ld(A0, A1, -8), 8, 0xF8E7_D6C5_B4A3_9281 },
    };

    [Theory, MemberData(nameof(Loads))]
    public void LoadExtendsAndToleratesMisalignment(string name, uint insn, int offset, ulong expected)
    {
        _ = name;
        using var rig = new Rig();
        rig.M.Memory.Write(Rig.Data, Pattern);
        rig.Emit(insn);
        rig[A1] = Rig.Data + (ulong)offset;
        rig.Step();
        rig.AssertNoTrap();
        Assert.Equal(expected.ToString("x16"), rig[A0].ToString("x16"));
    }

    [Theory]
    [InlineData(0, 0)]
    [InlineData(1, 0)]
    [InlineData(3, 0)]
    [InlineData(4093, 0)] // straddles a page boundary
    [InlineData(4095, 1)]
    public void StoresWriteExactlyTheirBytes(int offset, int variant)
    {
        using var rig = new Rig();
        ulong addr = Rig.Data + (ulong)offset;
        rig.M.Memory.Write(addr - 8, Enumerable.Repeat((byte)0xEE, 32).ToArray());
        rig.Emit(Rv.Sd(A2, A1, 0), Rv.Sw(A2, A1, 8), Rv.Sh(A2, A1, 12), Rv.Sb(A2, A1, 14));
        rig[A1] = addr;
        rig[A2] = variant == 0 ? 0x0807_0605_0403_0201UL : 0x1122_3344_5566_7788UL;
        rig.Step(4);
        rig.AssertNoTrap();
        var got = new byte[32];
        rig.M.Memory.Read(addr - 8, got);
        var v = BitConverter.GetBytes(rig[A2]);
        byte[] expected = [.. Enumerable.Repeat((byte)0xEE, 8), .. v, .. v[..4], .. v[..2], v[0], .. Enumerable.Repeat((byte)0xEE, 9)];
        Assert.Equal(expected, got);
    }

    [Theory]
    [InlineData(0x0UL)]
    [InlineData(0x1000_0100UL)]   // past the UART's registers
    [InlineData(0x7FFF_FFF8UL)]   // just below RAM
    [InlineData(0x8010_0000UL)]   // just past the end of 1 MiB of RAM
    [InlineData(0xFFFF_FFFF_FFFF_FFF8UL)]
    public void LoadFromUnmappedAddressIsAccessFault(ulong address)
    {
        using var rig = new Rig();
        rig.Emit(Rv.Nop, Rv.Ld(A0, A1, 0));
        rig[A1] = address;
        rig[A0] = 42;
        rig.Step(2);
        rig.AssertTrap(Cause.LoadAccessFault, Rig.Base + 4, address);
        Assert.Equal(42UL, rig[A0]); // the destination is untouched
        Assert.Equal(2UL, rig.M.Icount);
    }

    [Theory]
    [InlineData(0x0UL)]
    [InlineData(0x1000_0100UL)]
    [InlineData(0x8010_0000UL)]
    public void StoreToUnmappedAddressIsAccessFault(ulong address)
    {
        using var rig = new Rig();
        rig.Emit(Rv.Sw(A2, A1, 0));
        rig[A1] = address;
        rig.Step();
        rig.AssertTrap(Cause.StoreAccessFault, Rig.Base, address);
    }

    [Fact]
    public void LoadStraddlingTheEndOfRamFaults()
    {
        using var rig = new Rig();
        ulong address = Rig.Base + Rig.RamSize - 4;
        rig.Emit(Rv.Ld(A0, A1, 0));
        rig[A1] = address;
        rig.Step();
        rig.AssertTrap(Cause.LoadAccessFault, Rig.Base, address);
    }

    [Fact]
    public void LastBytesOfRamAreAccessible()
    {
        using var rig = new Rig();
        ulong address = Rig.Base + Rig.RamSize - 8;
        rig.Emit(Rv.Sd(A2, A1, 0), Rv.Ld(A0, A1, 0), Rv.Lbu(A3, A1, 7));
        rig[A1] = address;
        rig[A2] = 0xAB00_0000_0000_0001;
        rig.Step(3);
        rig.AssertNoTrap();
        Assert.Equal(0xAB00_0000_0000_0001UL, rig[A0]);
        Assert.Equal(0xABUL, rig[A3]);
    }

    [Fact]
    public void MmioLoadsReachDevices()
    {
        using var rig = new Rig();
        // UART LSR (offset 5): transmitter empty and idle; finisher reads zero.
        rig.Emit(Rv.Lui(A1, 0x1000_0000), Rv.Lbu(A0, A1, 5), Rv.Lui(A2, 0x0010_0000), Rv.Lw(A3, A2, 0));
        rig[A3] = 7;
        rig.Step(4);
        rig.AssertNoTrap();
        Assert.Equal(0x60UL, rig[A0]);
        Assert.Equal(0UL, rig[A3]);
    }
}

/// <summary>Branches and jumps: targets, link values, signed/unsigned compares.</summary>
public class BranchJumpTests
{
    public static TheoryData<string, ulong, ulong, bool> Branches => new()
    {
        { "beq", 5, 5, true }, { "beq", 5, 6, false },
        { "bne", 5, 6, true }, { "bne", 5, 5, false },
        { "blt", ulong.MaxValue, 0, true }, { "blt", 0, ulong.MaxValue, false }, { "blt", 3, 3, false },
        { "bge", 0, ulong.MaxValue, true }, { "bge", 3, 3, true }, { "bge", ulong.MaxValue, 0, false },
        { "bltu", 0, ulong.MaxValue, true }, { "bltu", ulong.MaxValue, 0, false },
        { "bgeu", ulong.MaxValue, 0, true }, { "bgeu", 3, 3, true }, { "bgeu", 0, 1, false },
    };

    [Theory, MemberData(nameof(Branches))]
    public void ConditionalBranch(string op, ulong a, ulong b, bool taken)
    {
        using var rig = new Rig();
        Func<int, int, long, uint> enc = op switch
        {
            "beq" => Rv.Beq, "bne" => Rv.Bne, "blt" => Rv.Blt, "bge" => Rv.Bge, "bltu" => Rv.Bltu, _ => Rv.Bgeu,
        };
        rig.Emit(Rv.Nop, enc(A0, A1, -4));
        rig.M.SetPc(Rig.Base + 4);
        rig[A0] = a;
        rig[A1] = b;
        rig.Step();
        Assert.Equal(taken ? Rig.Base : Rig.Base + 8, rig.M.Pc);
    }

    [Fact]
    public void JalLinksAndJumpsBothWays()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Jal(Ra, 16), Rv.Nop, Rv.Nop, Rv.Nop, Rv.Jal(T0, -8));
        rig.Step();
        Assert.Equal(Rig.Base + 16, rig.M.Pc);
        Assert.Equal(Rig.Base + 4, rig[Ra]);
        rig.Step();
        Assert.Equal(Rig.Base + 8, rig.M.Pc);
        Assert.Equal(Rig.Base + 20, rig[T0]);
    }

    [Fact]
    public void JalrClearsBitZeroAndReadsRs1BeforeWritingRd()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Jalr(A0, A0, 3));
        rig[A0] = Rig.Base + 0x100; // target = base + 0x103 with bit 0 cleared = base + 0x102
        rig.Step();
        Assert.Equal(Rig.Base + 0x102, rig.M.Pc);
        Assert.Equal(Rig.Base + 4, rig[A0]);
    }

    [Fact]
    public void JumpOutsideRamIsInstructionAccessFault()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Jalr(Ra, A0, 0));
        rig[A0] = 0x4000;
        rig.Step(2);
        rig.AssertTrap(Cause.InstructionAccessFault, 0x4000, 0x4000);
        Assert.Equal(Rig.Base + 4, rig[Ra]);
        Assert.Equal(2UL, rig.M.Icount);
    }

    [Fact]
    public void FallingOffTheEndOfRamIsInstructionAccessFault()
    {
        using var rig = new Rig();
        ulong last = Rig.Base + Rig.RamSize - 4;
        rig.M.Memory.Write(last, BitConverter.GetBytes(Rv.Nop));
        rig.M.SetPc(last);
        rig.Step(2);
        rig.AssertTrap(Cause.InstructionAccessFault, Rig.Base + Rig.RamSize, Rig.Base + Rig.RamSize);
    }
}
