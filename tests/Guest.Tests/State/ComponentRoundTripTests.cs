using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.Devices;
using LiveMigration.Guest.State;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.State;

/// <summary>Every component's Save/Restore round-trips, and what it restores behaves the same.</summary>
public class ComponentRoundTripTests
{
    private static Machine NewMachine() => new(new MachineConfig { MemorySize = 1 << 20 }, new TestHostPort());

    private static byte[] Save(IPersistent component)
    {
        var w = new StateWriter();
        component.Save(w);
        return w.ToArray();
    }

    private static void RoundTrip(Func<Machine, IMmioDevice> pick, Action<Machine> mutate)
    {
        using var a = NewMachine();
        using var b = NewMachine();
        byte[] pristine = Save(pick(a));
        mutate(a);
        byte[] saved = Save(pick(a));
        Assert.NotEqual(pristine, saved); // the mutation reached saved state
        var r = new StateReader(saved);
        pick(b).Restore(r);
        Assert.True(r.AtEnd);
        Assert.Equal(saved, Save(pick(b)));
    }

    [Fact]
    public void CpuRoundTrips()
    {
        using var a = NewMachine();
        for (int i = 1; i < 32; i++) a.SetRegister(i, 0x0101_0101_0101_0101UL * (ulong)i);
        ref var c = ref a.Cpu;
        c.Pc = 0x8000_1234;
        c.Icount = 987_654_321;
        c.Mstatus = Mstatus.MPIE;
        c.Mie = Irq.MTIP | Irq.MEIP;
        c.Mtvec = 0x8000_0101;
        c.Mscratch = 0xDEAD_BEEF;
        c.Mepc = 0x8000_0010;
        c.Mcause = Cause.MachineTimerInterrupt;
        c.Mtval = 0x42;
        c.McycleOffset = 5;
        c.MinstretOffset = 7;
        c.Reservation = 0x8000_2000;
        c.Waiting = 1;
        byte[] saved = a.SaveDeviceState();

        using var b = NewMachine();
        b.RestoreDeviceState(new StateReader(saved));
        Assert.Equal(saved, b.SaveDeviceState());
        for (int i = 1; i < 32; i++) Assert.Equal(a.GetRegister(i), b.GetRegister(i));
        Assert.Equal(0UL, b.GetRegister(0));
        Assert.Equal(0x8000_1234UL, b.Pc);
        Assert.Equal(987_654_321UL, b.Icount);
        Assert.Equal(Irq.MTIP | Irq.MEIP, b.Cpu.Mie);
        Assert.Equal(0x8000_2000UL, b.Cpu.Reservation);
        Assert.Equal(1u, b.Cpu.Waiting);
        Assert.Equal(a.ComputeDigest(), b.ComputeDigest());
    }

    [Fact]
    public void ClintRoundTrips()
    {
        RoundTrip(m => m.Clint, m =>
        {
            m.Clint.Write(0, 4, 1);
            m.Clint.Write(0x4000, 8, 0x1234_5678_9ABC);
            m.DeliverTime(0x1000);
        });
        using var b = NewMachine();
        using var a = NewMachine();
        a.Clint.Write(0x4000, 8, 77);
        a.DeliverTime(100);
        b.Clint.Restore(new StateReader(Save(a.Clint)));
        Assert.True(b.Clint.TimerPending);
        Assert.Equal(77UL, b.Clint.Mtimecmp);
        Assert.Equal(100UL, b.Clint.Time);
    }

    [Fact]
    public void PlicRoundTrips()
    {
        RoundTrip(m => m.Plic, m =>
        {
            m.Plic.Write(4 * 10, 4, 5);
            m.Plic.Write(4 * 33, 4, 2);
            m.Plic.Write(0x2000, 4, 1u << 10);
            m.Plic.Write(0x2000 + 0x80 + 4, 4, 0xFF);
            m.Plic.Write(0x20_0000, 4, 1);
            m.Plic.SetLevel(10, true);
        });

        // A claimed-but-not-completed source stays claimed across a restore.
        using var a = NewMachine();
        a.Plic.Write(4 * 10, 4, 1);
        a.Plic.Write(0x2000, 4, 1u << 10);
        a.Plic.SetLevel(10, true);
        Assert.True(a.Plic.Read(0x20_0004, 4, out ulong claimed));
        Assert.Equal(10UL, claimed);
        using var b = NewMachine();
        b.Plic.Restore(new StateReader(Save(a.Plic)));
        Assert.False(b.Plic.MachineExternalPending);
        b.Plic.Write(0x20_0004, 4, 10); // complete: the level is still high, so it fires again
        Assert.True(b.Plic.MachineExternalPending);
    }

    [Fact]
    public void UartRoundTripsIncludingItsReceiveFifo()
    {
        RoundTrip(m => m.Uart, m =>
        {
            m.Uart.Write(2, 1, 0x01); // FIFO on
            m.Uart.Write(1, 1, 0x01);
            m.Uart.Write(3, 1, 0x03);
            m.Uart.Write(7, 1, 0x5A);
            m.DeliverSerialInput("hello"u8);
        });

        using var a = NewMachine();
        a.Uart.Write(2, 1, 0x01);
        a.DeliverSerialInput("abcdefgh"u8);
        a.Uart.Read(0, 1, out _); // consume 'a' so the FIFO head is not at slot 0
        a.DeliverSerialInput("ijklmnopqrs"u8); // wraps the ring
        using var b = NewMachine();
        b.Uart.Restore(new StateReader(Save(a.Uart)));
        var got = new List<byte>();
        while (b.Uart.Read(5, 1, out ulong lsr) && (lsr & 1) != 0)
        {
            b.Uart.Read(0, 1, out ulong ch);
            got.Add((byte)ch);
        }
        Assert.Equal("bcdefghijklmnopq", System.Text.Encoding.ASCII.GetString(got.ToArray()));
    }

    [Fact]
    public void UartRestoreDrivesItsInterruptLine()
    {
        using var a = NewMachine();
        a.Plic.Write(4 * 10, 4, 1);
        a.Plic.Write(0x2000, 4, 1u << 10);
        a.Uart.Write(1, 1, 0x01);
        a.DeliverSerialInput("z"u8);
        Assert.True(a.Plic.MachineExternalPending);
        using var b = NewMachine();
        b.RestoreDeviceState(new StateReader(a.SaveDeviceState()));
        Assert.True(b.Plic.MachineExternalPending);
        Assert.Equal(a.Mip, b.Mip);
    }

    [Fact]
    public void FinisherRoundTrips()
    {
        using var a = NewMachine();
        using var b = NewMachine();
        byte[] saved = Save(a.Finisher);
        var r = new StateReader(saved);
        b.Finisher.Restore(r);
        Assert.True(r.AtEnd);
        Assert.Equal(saved, Save(b.Finisher));
        Assert.Throws<InvalidDataException>(() => b.Finisher.Restore(new StateReader(Save(a.Clint))));
    }

    [Fact]
    public void RamRoundTripsAndRestoreZeroesPagesTheSourceNeverWrote()
    {
        using var a = NewMachine();
        a.Memory.Write(0x8000_0000, [1, 2, 3]);
        a.Memory.Write(0x8000_5FFE, [9, 9, 9, 9]); // spans two pages
        a.Memory.Write(0x800F_F000, new byte[4096]); // written, but zero: not stored
        var w = new StateWriter();
        a.SaveState(w);

        using var b = NewMachine();
        b.Memory.Write(0x8008_0000, [0xFF]); // garbage the restore must clear
        b.RestoreState(new StateReader(w.ToArray()));
        for (int p = 0; p < a.Memory.PageCount; p++)
            Assert.True(a.Memory.PageSpan(p).SequenceEqual(b.Memory.PageSpan(p)), $"page {p} differs");
        Assert.True(b.Memory.IsZeroPage(0x80));
        Assert.Equal(a.ComputeDigest(), b.ComputeDigest());
    }

    [Fact]
    public void ZeroPagesAreNotStored()
    {
        using var a = NewMachine();
        var w0 = new StateWriter();
        a.SaveState(w0);
        a.Memory.Write(0x8000_3000, new byte[4096]);
        var w1 = new StateWriter();
        a.SaveState(w1);
        a.Memory.Write(0x8000_3000, [1]);
        var w2 = new StateWriter();
        a.SaveState(w2);
        Assert.Equal(w0.ToArray().Length, w1.ToArray().Length);
        Assert.Equal(w0.ToArray().Length + 4 + 4096, w2.ToArray().Length);
    }
}
