using LiveMigration.Guest;
using LiveMigration.Guest.Devices.Balloon;
using LiveMigration.Guest.Loader;
using LiveMigration.Guest.Memory;
using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Tests;

/// <summary>The free-page reporting device: registers, commands, save/restore, and the guests that use it.</summary>
public class BalloonTests
{
    private const ulong Dram = GuestMemory.DefaultBase;
    private const ulong B = BalloonDevice.DefaultBase;

    private static Machine NewMachine(ulong size = 4 << 20) =>
        new(new MachineConfig { MemorySize = size }, NullHostPort.Instance, compileBlocks: false);

    private static uint Command(Machine m, ulong address, uint pages, uint command)
    {
        var d = m.Balloon;
        Assert.True(d.Write(BalloonDevice.RegAddress, 8, address));
        Assert.True(d.Write(BalloonDevice.RegCount, 4, pages));
        Assert.True(d.Write(BalloonDevice.RegCommand, 4, command));
        Assert.True(d.Read(BalloonDevice.RegStatus, 4, out ulong status));
        return (uint)status;
    }

    private static ulong Reg(Machine m, int offset)
    {
        Assert.True(m.Balloon.Read((ulong)offset, 4, out ulong v));
        return v;
    }

    [Fact]
    public void IdentificationRegisters()
    {
        using var m = NewMachine();
        Assert.Equal(0x0010_2000UL, m.Balloon.Base);
        Assert.Equal(BalloonDevice.Magic, Reg(m, BalloonDevice.RegMagic));
        Assert.Equal("BALN", System.Text.Encoding.ASCII.GetString(BitConverter.GetBytes((uint)Reg(m, BalloonDevice.RegMagic))));
        Assert.Equal(1UL, Reg(m, BalloonDevice.RegVersion));
        Assert.Equal(4096UL, Reg(m, BalloonDevice.RegPageSize));
        Assert.Equal(1024UL, Reg(m, BalloonDevice.RegDramPages));
        Assert.Equal(0UL, Reg(m, 0x800)); // unknown registers read as zero
    }

    [Fact]
    public void ReportMarksPagesFreeAndDiscardsTheirContents()
    {
        using var m = NewMachine();
        m.Memory.Write(Dram + 5 * 4096 + 10, [1, 2, 3]);
        Assert.False(m.Memory.IsZeroPage(5));
        Assert.Equal(BalloonDevice.StatusOk, Command(m, Dram + 4 * 4096, 3, BalloonDevice.CommandReport));
        Assert.Equal([4, 5, 6], m.Balloon.FreePages());
        Assert.Equal(3, m.Balloon.FreePageCount);
        Assert.Equal(3UL, Reg(m, BalloonDevice.RegFreePages));
        Assert.True(m.Balloon.IsFreePage(5));
        Assert.False(m.Balloon.IsFreePage(3));
        Assert.False(m.Balloon.IsFreePage(7));
        Assert.True(m.Memory.IsZeroPage(5));
        Assert.False(m.Memory.IsTouched(5)); // back to a never-written page: no data to send
    }

    [Fact]
    public void WithdrawSplitsARange()
    {
        using var m = NewMachine();
        Assert.Equal(BalloonDevice.StatusOk, Command(m, Dram + 16 * 4096, 100, BalloonDevice.CommandReport));
        Assert.Equal(BalloonDevice.StatusOk, Command(m, Dram + 50 * 4096, 10, BalloonDevice.CommandWithdraw));
        Assert.Equal([(16, 34), (60, 56)], m.Balloon.FreeRanges());
        Assert.Equal(90, m.Balloon.FreePageCount);
        Assert.Equal(2, m.Balloon.Reports + m.Balloon.Withdrawals);
        // Withdrawing pages that are not free, or reporting twice, changes nothing else.
        Assert.Equal(BalloonDevice.StatusOk, Command(m, Dram, 2, BalloonDevice.CommandWithdraw));
        Assert.Equal(BalloonDevice.StatusOk, Command(m, Dram + 16 * 4096, 1, BalloonDevice.CommandReport));
        Assert.Equal(90, m.Balloon.FreePageCount);
    }

    [Fact]
    public void ThirtyTwoBitAddressHalves()
    {
        using var m = NewMachine();
        var d = m.Balloon;
        Assert.True(d.Write(BalloonDevice.RegAddress, 4, Dram + 8192));
        Assert.True(d.Write(BalloonDevice.RegAddressHigh, 4, 0));
        Assert.True(d.Write(BalloonDevice.RegCount, 4, 1));
        Assert.True(d.Write(BalloonDevice.RegCommand, 4, BalloonDevice.CommandReport));
        Assert.Equal([2], d.FreePages());
    }

    [Theory]
    [InlineData(Dram + 100, 1u, BalloonDevice.CommandReport, BalloonDevice.StatusBadRange)]      // not page-aligned
    [InlineData(Dram - 4096, 1u, BalloonDevice.CommandReport, BalloonDevice.StatusBadRange)]     // below DRAM
    [InlineData(Dram + (4 << 20), 1u, BalloonDevice.CommandReport, BalloonDevice.StatusBadRange)] // just past the end
    [InlineData(Dram + (4 << 20) - 4096, 2u, BalloonDevice.CommandReport, BalloonDevice.StatusBadRange)] // runs past the end
    [InlineData(Dram, 0u, BalloonDevice.CommandReport, BalloonDevice.StatusBadRange)]            // empty
    [InlineData(Dram, 0xFFFF_FFFFu, BalloonDevice.CommandWithdraw, BalloonDevice.StatusBadRange)]
    [InlineData(Dram, 1u, 7u, BalloonDevice.StatusBadCommand)]
    public void BadCommandsAreRefusedWithAStatusAndChangeNothing(ulong address, uint pages, uint command, uint status)
    {
        using var m = NewMachine();
        Command(m, Dram + 8 * 4096, 4, BalloonDevice.CommandReport);
        Assert.Equal(status, Command(m, address, pages, command));
        Assert.Equal([8, 9, 10, 11], m.Balloon.FreePages());
    }

    [Fact]
    public void LastPageOfDramCanBeReported()
    {
        using var m = NewMachine();
        Assert.Equal(BalloonDevice.StatusOk, Command(m, Dram + (4 << 20) - 4096, 1, BalloonDevice.CommandReport));
        Assert.True(m.Balloon.IsFreePage(1023));
        Assert.Equal([(1023, 1)], m.Balloon.FreeRanges());
    }

    [Fact]
    public void SaveRestoreRoundTripThroughTheMachineState()
    {
        using var a = NewMachine();
        Command(a, Dram + 3 * 4096, 5, BalloonDevice.CommandReport);
        Command(a, Dram + 64 * 4096, 200, BalloonDevice.CommandReport);
        Command(a, Dram + 100 * 4096, 1, BalloonDevice.CommandWithdraw);
        Command(a, Dram + 1000 * 4096, 24, BalloonDevice.CommandReport);
        var w = new StateWriter();
        a.SaveState(w);

        using var b = NewMachine();
        b.RestoreState(new StateReader(w.ToArray()));
        Assert.Equal(a.Balloon.FreeRanges(), b.Balloon.FreeRanges());
        Assert.Equal(a.Balloon.FreePageCount, b.Balloon.FreePageCount);
        Assert.Equal(Reg(a, BalloonDevice.RegAddress), Reg(b, BalloonDevice.RegAddress));
        Assert.Equal(Reg(a, BalloonDevice.RegCount), Reg(b, BalloonDevice.RegCount));
        Assert.Equal(a.ComputeDigest(), b.ComputeDigest());
    }

    [Fact]
    public void FreePagesArePartOfTheDigest()
    {
        using var a = NewMachine();
        using var b = NewMachine();
        Assert.Equal(a.ComputeDigest(), b.ComputeDigest());
        Command(a, Dram + 40 * 4096, 1, BalloonDevice.CommandReport);
        Assert.NotEqual(a.ComputeDigest(), b.ComputeDigest());
    }

    [Fact]
    public void ResetForgetsFreePages()
    {
        using var m = NewMachine();
        Command(m, Dram + 40 * 4096, 3, BalloonDevice.CommandReport);
        m.Reset(Dram);
        Assert.Equal(0, m.Balloon.FreePageCount);
    }

    private static byte[] BalloonSection(Action<StateWriter> body)
    {
        var w = new StateWriter();
        w.BeginSection("BALN", 1);
        body(w);
        w.EndSection();
        return w.ToArray();
    }

    public static TheoryData<string, uint[]> BadStates => new()
    {
        { "wrong page count", [999, 0] },
        { "range past the end", [1024, 1, 1020, 5] },
        { "empty range", [1024, 1, 10, 0] },
        { "overlapping ranges", [1024, 2, 10, 5, 12, 3] },
        { "more ranges than pages", [1024, 5000] },
        { "truncated", [1024, 3, 10, 1] },
    };

    [Theory]
    [MemberData(nameof(BadStates))]
    public void RestoreRejectsMalformedState(string why, uint[] fields)
    {
        _ = why;
        using var m = NewMachine();
        var data = BalloonSection(w =>
        {
            w.U64(0);
            w.U32(0);
            w.U32(0);
            foreach (var f in fields) w.U32(f);
        });
        Assert.Throws<InvalidDataException>(() => m.Balloon.Restore(new StateReader(data)));
    }

    [Fact]
    public void RestoreRejectsANewerVersion()
    {
        using var m = NewMachine();
        var w = new StateWriter();
        w.BeginSection("BALN", 2);
        w.EndSection();
        var ex = Assert.Throws<InvalidDataException>(() => m.Balloon.Restore(new StateReader(w.ToArray())));
        Assert.Contains("version 2", ex.Message);
    }

    // ---- The guests report their unused RAM ----

    [Theory]
    [InlineData("hello", 0)]
    [InlineData("dirty_small", 256 << 10)]
    [InlineData("compute_small", 0)]
    public void GuestsReportTheRamTheyDoNotUse(string guest, int workingSet)
    {
        using var m = NewMachine(128 << 20);
        m.Reset(ElfLoader.Load(m, File.ReadAllBytes(LiveMigration.Tests.Shared.RepoPaths.Guest(guest))));
        Assert.Equal(StopReason.Exited, m.Run(2_000_000_000));
        Assert.Equal(0, m.ExitCode);

        var ranges = m.Balloon.FreeRanges().ToList();
        var (first, count) = Assert.Single(ranges);
        Assert.Equal(m.Memory.PageCount, first + count); // up to the end of RAM
        Assert.InRange(count, (120 << 20) / 4096, m.Memory.PageCount);
        // The guest never touched a page it reported, and its working set sits just below the free range.
        for (int p = 0; p < m.Memory.PageCount; p++)
            Assert.False(m.Balloon.IsFreePage(p) && m.Memory.IsTouched(p), $"page {p} is free but was written");
        int highestTouched = Enumerable.Range(0, m.Memory.PageCount).Last(m.Memory.IsTouched);
        Assert.Equal(first - 1, highestTouched); // the stack top, or the working set's last page
        if (workingSet > 0)
        {
            // The working set (random writes) lies just below the free range and is not reported.
            int wsPages = workingSet / 4096;
            int touched = Enumerable.Range(first - wsPages, wsPages).Count(m.Memory.IsTouched);
            Assert.InRange(touched, wsPages * 9 / 10, wsPages);
        }
    }
}
