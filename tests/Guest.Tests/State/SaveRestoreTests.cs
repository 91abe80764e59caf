using LiveMigration.Guest.State;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.State;

/// <summary>
/// Save → restore → continue must be indistinguishable from an uninterrupted run: same output,
/// same icount, same final digest. Likewise for a copy-on-write snapshot taken while running.
/// </summary>
public class SaveRestoreTests
{
    private static (byte[] Output, ulong Icount, ulong Digest) Finish(Machine m, TestHostPort port)
    {
        Assert.Equal(StopReason.Exited, m.Run(2_000_000_000));
        Assert.Equal(0, m.ExitCode);
        return (port.Output, m.Icount, m.ComputeDigest());
    }

    public static TheoryData<string, ulong> SplitPoints => new()
    {
        { "compute_small", 1 },
        { "compute_small", 1_234_567 },
        { "dirty_small", 777_777 },
        { "dirty_small", 2_500_001 },
        { "kv", 5_000 },
        { "kv", 60_001 },
        { "idle", 20_000 },
        { "traps", 3_000 },
    };

    [Theory, MemberData(nameof(SplitPoints))]
    public void SaveRestoreContinueEqualsUninterruptedRun(string guest, ulong splitAt)
    {
        var straightPort = GuestRun.PortFor(guest);
        using var straight = GuestRun.Load(guest, straightPort);
        var expected = Finish(straight, straightPort);
        Assert.True(splitAt < expected.Icount, $"split {splitAt} must fall inside the run ({expected.Icount} instructions)");

        var port = GuestRun.PortFor(guest);
        using var original = GuestRun.Load(guest, port);
        Assert.Equal(StopReason.InstructionLimit, original.Run(splitAt));
        var w = new StateWriter();
        original.SaveState(w);
        ulong digestAtSplit = original.ComputeDigest();
        var restoredPort = port.Clone();

        using var restored = new Machine(new MachineConfig(), restoredPort);
        restored.RestoreState(new StateReader(w.ToArray()));
        Assert.Equal(splitAt, restored.Icount);
        Assert.Equal(digestAtSplit, restored.ComputeDigest());

        var a = Finish(original, port);
        var b = Finish(restored, restoredPort);
        Assert.Equal(expected.Output, a.Output);
        Assert.Equal(expected.Output, b.Output);
        Assert.Equal(expected.Icount, b.Icount);
        Assert.Equal(expected.Digest, a.Digest);
        Assert.Equal(expected.Digest, b.Digest);
    }

    [Theory]
    [InlineData("dirty_small", 1_000_000UL)]
    [InlineData("kv", 30_000UL)]
    public void SnapshotWhileRunningRestoresToItsDigest(string guest, ulong at)
    {
        var straightPort = GuestRun.PortFor(guest);
        using var straight = GuestRun.Load(guest, straightPort);
        var expected = Finish(straight, straightPort);

        var port = GuestRun.PortFor(guest);
        using var m = GuestRun.Load(guest, port);
        m.Run(at);
        using var snapshot = m.TakeSnapshot();
        var portAtSnapshot = port.Clone();
        Assert.Equal(at, snapshot.Icount);
        Assert.Equal(m.ComputeDigest(), snapshot.Digest);

        var after = Finish(m, port); // the guest keeps writing memory after the snapshot
        Assert.NotEqual(snapshot.Digest, after.Digest);

        var w = new StateWriter();
        snapshot.Save(w);
        using var restored = new Machine(new MachineConfig(), portAtSnapshot);
        restored.RestoreState(new StateReader(w.ToArray()));
        Assert.Equal(snapshot.Digest, restored.ComputeDigest());
        Assert.Equal(at, restored.Icount);

        var resumed = Finish(restored, portAtSnapshot);
        Assert.Equal(expected.Output, resumed.Output);
        Assert.Equal(expected.Digest, resumed.Digest);
    }

    [Fact]
    public void RestoreIntoAMachineWithDifferentRamIsRefused()
    {
        using var a = new Machine(new MachineConfig { MemorySize = 1 << 20 }, new TestHostPort());
        var w = new StateWriter();
        a.SaveState(w);
        using var b = new Machine(new MachineConfig { MemorySize = 2 << 20 }, new TestHostPort());
        var e = Assert.Throws<InvalidDataException>(() => b.RestoreState(new StateReader(w.ToArray())));
        Assert.Contains("1 MiB", e.Message);
        Assert.Contains("2 MiB", e.Message);
    }

    [Fact]
    public void TruncatedStateIsInvalidData()
    {
        using var a = new Machine(new MachineConfig { MemorySize = 1 << 20 }, new TestHostPort());
        a.Memory.Write(0x8000_0000, [1, 2, 3]);
        var w = new StateWriter();
        a.SaveState(w);
        byte[] full = w.ToArray();
        using var b = new Machine(new MachineConfig { MemorySize = 1 << 20 }, new TestHostPort());
        foreach (int cut in new[] { 3, 20, full.Length / 2, full.Length - 1 })
            Assert.Throws<InvalidDataException>(() => b.RestoreState(new StateReader(full.AsMemory(0, cut))));
    }

    [Fact]
    public void NewerSectionVersionIsRefusedWithItsTag()
    {
        using var a = new Machine(new MachineConfig { MemorySize = 1 << 20 }, new TestHostPort());
        var w = new StateWriter();
        a.SaveState(w);
        byte[] bytes = w.ToArray();
        bytes[4] = 99; // the MACH section's version (u16 after the 4-byte tag)
        using var b = new Machine(new MachineConfig { MemorySize = 1 << 20 }, new TestHostPort());
        var e = Assert.Throws<InvalidDataException>(() => b.RestoreState(new StateReader(bytes)));
        Assert.Contains("MACH", e.Message);
        Assert.Contains("99", e.Message);
    }
}

/// <summary>Corrupt saved state is an <see cref="InvalidDataException"/>, never another host exception.</summary>
public class CorruptStateTests
{
    [Fact]
    public void EveryCorruptedHeaderByteIsInvalidDataOrHarmless()
    {
        using var a = new Machine(new MachineConfig { MemorySize = 64 << 10 }, new TestHostPort());
        a.Memory.Write(0x8000_1000, [1, 2, 3]);
        a.Uart.Write(2, 1, 1);
        a.DeliverSerialInput("abc"u8);
        var w = new StateWriter();
        a.SaveState(w);
        byte[] good = w.ToArray();
        int headerEnd = good.Length - 4096 - 4; // everything before the one stored page's bytes
        var unexpected = new List<string>();
        foreach (byte value in new byte[] { 0x00, 0xFF, 0x80 })
        {
            for (int i = 0; i < headerEnd; i++)
            {
                byte[] bad = (byte[])good.Clone();
                if (bad[i] == value) continue;
                bad[i] = value;
                using var b = new Machine(new MachineConfig { MemorySize = 64 << 10 }, new TestHostPort());
                try { b.RestoreState(new StateReader(bad)); }
                catch (InvalidDataException) { }
                catch (Exception e) { unexpected.Add($"byte {i} = 0x{value:x2}: {e.GetType().Name}: {e.Message}"); }
            }
        }
        Assert.True(unexpected.Count == 0, string.Join("\n", unexpected.Take(10)));
    }

    [Fact]
    public void HugeBlobLengthIsInvalidData()
    {
        var w = new StateWriter();
        w.U32(0xFFFF_FFFF);
        w.U64(1);
        Assert.Throws<InvalidDataException>(() => new StateReader(w.ToArray()).Blob());
    }

    [Fact]
    public void SectionsRoundTripAndNewerMinorFieldsAreSkipped()
    {
        var w = new StateWriter();
        w.BeginSection("TEST", 2);
        w.U64(42);
        w.Blob([1, 2, 3]);
        w.U32(7); // a field a version-1 reader does not know
        w.EndSection();
        w.U8(9);
        var r = new StateReader(w.ToArray());
        Assert.Equal(2, r.OpenSection("TEST", 1, 2));
        Assert.Equal(42UL, r.U64());
        Assert.Equal([1, 2, 3], r.Blob().ToArray());
        r.CloseSection();
        Assert.Equal(9, r.U8());
        Assert.True(r.AtEnd);
    }
}
