using LiveMigration.Guest.Memory;
using LiveMigration.Guest.Tests.Infra;
using static LiveMigration.Guest.Tests.Infra.X;

namespace LiveMigration.Guest.Tests.Memory;

/// <summary>Dirty clients, zero pages, COW snapshots, decode-cache invalidation and the digest.</summary>
public class MemoryTests
{
    private const ulong Base = GuestMemory.DefaultBase;

    private static GuestMemory NewMemory() => new(1 << 20);

    [Fact]
    public void DirtyClientsAreIndependent()
    {
        using var mem = NewMemory();
        var a = mem.CreateDirtyClient("a");
        var b = mem.CreateDirtyClient("b");
        Assert.Equal(mem.PageCount, a.CountDirty()); // a new client has seen nothing yet
        a.CollectAndClear([]);
        Assert.Equal(0, a.CountDirty());
        Assert.Equal(mem.PageCount, b.CountDirty()); // b still sees everything

        b.CollectAndClear([]);
        mem.Write(Base + 5 * 4096 + 10, [1]);
        mem.Write(Base + 9 * 4096 - 1, [1, 2]); // straddles pages 8 and 9
        var pages = new List<int>();
        Assert.Equal(3, a.CollectAndClear(pages));
        Assert.Equal([5, 8, 9], pages);
        Assert.True(b.IsDirty(5) && b.IsDirty(8) && b.IsDirty(9));
        b.Clear(8);
        Assert.False(b.IsDirty(8));
        Assert.True(b.IsDirty(9));
        Assert.Equal(0, a.CountDirty());
        a.MarkAll();
        Assert.Equal(mem.PageCount, a.CountDirty());
        Assert.Equal(2, b.CountDirty());
    }

    [Fact]
    public void GuestStoresMarkPagesDirtyForEveryClientEvenAfterAClear()
    {
        using var rig = new Rig();
        // Two stores to the same page, with a clear in between: the second must be seen again.
        rig.Emit(Rv.Sd(A2, A1, 0), Rv.Sd(A2, A1, 8));
        var c = rig.M.Memory.CreateDirtyClient("precopy");
        c.CollectAndClear([]);
        int page = (int)((Rig.Data - Rig.Base) >> 12);
        rig[A1] = Rig.Data;
        rig.Step();
        Assert.True(c.IsDirty(page));
        c.Clear(page);
        rig.Step();
        Assert.True(c.IsDirty(page));
        Assert.Equal(1, c.CountDirty());
    }

    [Fact]
    public void ReleasedClientBitIsReused()
    {
        using var mem = NewMemory();
        var clients = Enumerable.Range(0, 7).Select(i => mem.CreateDirtyClient($"c{i}")).ToList();
        Assert.Throws<InvalidOperationException>(() => mem.CreateDirtyClient("one too many"));
        clients[3].Release();
        var again = mem.CreateDirtyClient("again");
        Assert.Equal(mem.PageCount, again.CountDirty());
    }

    [Fact]
    public void ZeroPageAwareness()
    {
        using var mem = NewMemory();
        Assert.True(mem.IsZeroPage(3));
        Assert.False(mem.IsTouched(3));
        mem.Write(Base + 3 * 4096, [0, 0, 0]);
        Assert.True(mem.IsTouched(3));
        Assert.True(mem.IsZeroPage(3)); // written with zeros is still a zero page
        mem.Write(Base + 3 * 4096 + 4095, [7]);
        Assert.False(mem.IsZeroPage(3));
        mem.ZeroPage(3);
        Assert.True(mem.IsZeroPage(3));
        Assert.False(mem.IsTouched(3));
    }

    [Fact]
    public void SnapshotReadsOldContentsAfterTheGuestOverwrites()
    {
        using var rig = new Rig();
        var mem = rig.M.Memory;
        int page = (int)((Rig.Data - Rig.Base) >> 12);
        rig.WriteU64(Rig.Data, 0x1111);
        using var snap = mem.CreateSnapshot();
        Assert.False(snap.IsZeroPage(page));
        Assert.True(snap.IsZeroPage(page + 1));
        rig.Emit(Rv.Sd(A2, A1, 0), Rv.Sd(A2, A1, 4096));
        rig[A1] = Rig.Data;
        rig[A2] = 0x2222;
        rig.Step(2);
        Assert.Equal(0x2222UL, rig.ReadU64(Rig.Data));

        var buf = new byte[4096];
        snap.ReadPage(page, buf);
        Assert.Equal(0x1111UL, BitConverter.ToUInt64(buf));
        snap.ReadPage(page + 1, buf);
        Assert.True(buf.All(x => x == 0));
        Assert.True(snap.IsZeroPage(page + 1)); // never touched at snapshot time
    }

    [Fact]
    public void TwoSnapshotsEachKeepTheirOwnView()
    {
        using var mem = NewMemory();
        mem.Write(Base, [1]);
        using var s1 = mem.CreateSnapshot();
        mem.Write(Base, [2]);
        using var s2 = mem.CreateSnapshot();
        mem.Write(Base, [3]);
        var buf = new byte[4096];
        s1.ReadPage(0, buf);
        Assert.Equal(1, buf[0]);
        s2.ReadPage(0, buf);
        Assert.Equal(2, buf[0]);
        Assert.Equal(3, mem.PageSpan(0)[0]);
    }

    [Fact]
    public void SelfModifyingCodeIsSeen()
    {
        using var rig = new Rig();
        // 0: addi a0, zero, 1    (executed once, so it is decoded and cached)
        // 4: sw a2, 0(a1)        (overwrite instruction 0 with "addi a0, zero, 2")
        // 8: jal x0, -8          (jump back and execute the new instruction)
        rig.Emit(Rv.Addi(A0, Zero, 1), Rv.Sw(A2, A1, 0), Rv.Jal(Zero, -8));
        rig[A1] = Rig.Base;
        rig[A2] = Rv.Addi(A0, Zero, 2);
        rig.Step(1);
        Assert.Equal(1UL, rig[A0]);
        rig.Step(3);
        Assert.Equal(2UL, rig[A0]);
    }

    [Fact]
    public void StoreOverTheSecondHalfOfAnInstructionInvalidatesIt()
    {
        using var rig = new Rig();
        ulong target = Rig.Base + 0x100;
        rig.M.Memory.Write(target, BitConverter.GetBytes(Rv.Addi(A0, Zero, 1)));
        rig.M.Memory.Write(target + 4, BitConverter.GetBytes(Rv.Jalr(Zero, Ra, 0)));
        // Run it once, patch only its upper 16 bits (the immediate) with sh, run it again.
        rig.Emit(Rv.Jal(Ra, 0x100), Rv.Sh(A2, A1, 2), Rv.Jal(Ra, 0x100 - 8));
        rig[A1] = target;
        rig[A2] = Rv.Addi(A0, Zero, 0x7F) >> 16;
        rig.Step(3);
        Assert.Equal(1UL, rig[A0]);
        rig.Step(4);
        Assert.Equal(0x7FUL, rig[A0]);
    }

    [Fact]
    public void MisalignedStoreAcrossAPageInvalidatesCodeOnTheSecondPage()
    {
        using var rig = new Rig();
        ulong target = Rig.Base + 0x3000; // first instruction of a page
        rig.M.Memory.Write(target, [.. BitConverter.GetBytes(Rv.Addi(A0, Zero, 1)), .. BitConverter.GetBytes(Rv.Jalr(Zero, Ra, 0))]);
        rig.Emit(Rv.Jal(Ra, 0x3000), Rv.Sd(A2, A1, -4), Rv.Jal(Ra, 0x3000 - 8));
        rig[A1] = target;
        rig[A2] = (ulong)Rv.Addi(A0, Zero, 9) << 32 | 0xDEADBEEF; // the upper word lands on the instruction
        rig.Step(3);
        Assert.Equal(1UL, rig[A0]);
        rig.Step(4);
        Assert.Equal(9UL, rig[A0]);
    }

    [Fact]
    public void HostWriteOverDecodedCodeIsSeen()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Addi(A0, Zero, 1), Rv.Jal(Zero, -4));
        rig.Step(2);
        Assert.Equal(1UL, rig[A0]);
        rig.M.Memory.Write(Rig.Base, BitConverter.GetBytes(Rv.Addi(A0, Zero, 5)));
        rig.Step(1);
        Assert.Equal(5UL, rig[A0]);
    }

    [Fact]
    public void DigestIsEqualForEqualStatesAndChangesWithAnyPage()
    {
        using var a = new Machine(new MachineConfig { MemorySize = 1 << 20 }, new TestHostPort());
        using var b = new Machine(new MachineConfig { MemorySize = 1 << 20 }, new TestHostPort());
        Assert.Equal(a.ComputeDigest(), b.ComputeDigest());
        ulong d0 = a.ComputeDigest();
        Assert.Equal(d0, a.ComputeDigest()); // stable without changes

        a.Memory.Write(Base + 200 * 4096, [1]);
        ulong d1 = a.ComputeDigest();
        Assert.NotEqual(d0, d1);
        b.Memory.Write(Base + 200 * 4096, [1]);
        Assert.Equal(d1, b.ComputeDigest());

        a.Memory.Write(Base + 200 * 4096, [0]); // back to zeros: same as never written
        Assert.Equal(d0, a.ComputeDigest());

        // Same bytes on a different page is a different state.
        b.Memory.Write(Base + 200 * 4096, [0]);
        b.Memory.Write(Base + 201 * 4096, [1]);
        Assert.NotEqual(d1, b.ComputeDigest());
    }

    [Fact]
    public void DigestCoversRegistersCsrsAndDevices()
    {
        using var a = new Machine(new MachineConfig { MemorySize = 1 << 20 }, new TestHostPort());
        ulong d0 = a.ComputeDigest();
        a.SetRegister(5, 1);
        ulong d1 = a.ComputeDigest();
        Assert.NotEqual(d0, d1);
        a.Cpu.Mscratch = 1;
        ulong d2 = a.ComputeDigest();
        Assert.NotEqual(d1, d2);
        a.Clint.Write(0x4000, 8, 5);
        Assert.NotEqual(d2, a.ComputeDigest());
    }

    [Fact]
    public void DigestSeesGuestStoresBetweenDigests()
    {
        // The digest's own dirty bit must be set by fast-path stores after each digest.
        using var rig = new Rig();
        rig.Emit(Rv.Sd(A2, A1, 0), Rv.Addi(A2, A2, 1), Rv.Jal(Zero, -8));
        rig[A1] = Rig.Data;
        rig[A2] = 1;
        var seen = new HashSet<ulong>();
        for (int i = 0; i < 5; i++)
        {
            rig.Step(3);
            Assert.True(seen.Add(rig.M.ComputeDigest()));
        }
        using var copy = new Machine(new MachineConfig { MemorySize = Rig.RamSize }, new TestHostPort());
        var w = new LiveMigration.Guest.State.StateWriter();
        rig.M.SaveState(w);
        copy.RestoreState(new LiveMigration.Guest.State.StateReader(w.ToArray()));
        Assert.Equal(rig.M.ComputeDigest(), copy.ComputeDigest());
    }
}

/// <summary>Bounds of the host-side RAM accessors: out-of-range requests throw, never touch host memory.</summary>
public class GuestMemoryBoundsTests
{
    private const ulong Base = GuestMemory.DefaultBase;

    [Theory]
    [InlineData(0UL, (1 << 20) + 1)]           // longer than RAM, starting at its base
    [InlineData(0UL, (2 << 20))]
    [InlineData(4096UL, (1 << 20))]
    [InlineData((1UL << 20) - 1, 2)]
    [InlineData(1UL << 20, 1)]
    public void AccessesBeyondRamThrow(ulong offset, int length)
    {
        using var mem = new GuestMemory(1 << 20);
        Assert.False(mem.Contains(Base + offset, length));
        Assert.Throws<ArgumentOutOfRangeException>(() => mem.Write(Base + offset, new byte[length]));
        Assert.Throws<ArgumentOutOfRangeException>(() => mem.Read(Base + offset, new byte[length]));
    }

    [Fact]
    public void AccessesBelowRamThrow()
    {
        using var mem = new GuestMemory(1 << 20);
        Assert.False(mem.Contains(Base - 1, 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => mem.Write(Base - 1, new byte[2]));
    }

    [Fact]
    public void WholeRamIsAccessible()
    {
        using var mem = new GuestMemory(1 << 20);
        Assert.True(mem.Contains(Base, 1 << 20));
        mem.Write(Base, new byte[1 << 20]);
        mem.Read(Base + (1 << 20) - 1, new byte[1]);
    }
}
