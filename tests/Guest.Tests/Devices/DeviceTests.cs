using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.Tests.Infra;
using static LiveMigration.Guest.Tests.Infra.X;

namespace LiveMigration.Guest.Tests.Devices;

/// <summary>Device registers as the guest sees them (through MMIO instructions where it matters).</summary>
public class DeviceTests
{
    private static Machine NewMachine(TestHostPort? port = null) => new(new MachineConfig { MemorySize = 1 << 20 }, port ?? new TestHostPort());

    [Theory]
    [InlineData(0x5555u, 0)]
    [InlineData(0x3333u | (1u << 16), 1)]
    [InlineData(0x3333u | (255u << 16), 255)]
    [InlineData(0x7777u, 0)] // reset ends the run as a pass
    public void FinisherExitCodes(uint value, int code)
    {
        using var rig = new Rig();
        rig.Emit(Rv.Lui(A1, 0x0010_0000), Rv.Sw(A2, A1, 0), Rv.Addi(A0, Zero, 1));
        rig[A2] = value;
        Assert.Equal(StopReason.Exited, rig.M.Run(100));
        Assert.Equal(code, rig.M.ExitCode);
        Assert.Equal(2UL, rig.M.Icount); // stops right after the store
        Assert.Equal(0UL, rig[A0]);
        Assert.Equal(StopReason.Exited, rig.M.Run(100)); // stays exited
        Assert.Equal(2UL, rig.M.Icount);
    }

    [Fact]
    public void OtherFinisherValuesAreIgnored()
    {
        using var m = NewMachine();
        m.Finisher.Write(0, 4, 0x1234);
        m.Finisher.Write(4, 4, 0x5555); // not the control register
        Assert.Null(m.ExitCode);
    }

    [Fact]
    public void ClintTimeAndCompareHalves()
    {
        var port = new TestHostPort { TicksPerInstruction = 0 }.TimeAt(0, 0x1_2345_6789);
        using var rig = new Rig(port);
        rig.Emit(Rv.Lui(A1, 0x0200_0000), Rv.Lui(T0, 0xC000), Rv.Op("add", A1, A1, T0), // a1 = clint + 0xC000
                 Rv.Ld(A0, A1, -8), Rv.Lw(A2, A1, -4), Rv.Lwu(A3, A1, -8),            // mtime at 0xBFF8
                 Rv.Csrr(A4, 0xC01));                                                     // the time CSR
        rig.Step(7);
        rig.AssertNoTrap();
        Assert.Equal(0x1_2345_6789UL, rig[A0]);
        Assert.Equal(1UL, rig[A2]);
        Assert.Equal(0x2345_6789UL, rig[A3]);
        Assert.Equal(0x1_2345_6789UL, rig[A4]);

        var clint = rig.M.Clint;
        clint.Write(0x4000, 4, 0xAAAA_BBBB);
        clint.Write(0x4004, 4, 0x1);
        Assert.Equal(0x1_AAAA_BBBBUL, clint.Mtimecmp);
        Assert.True(clint.Read(0x4004, 4, out ulong hi) && hi == 1);
        Assert.True(clint.TimerPending == (clint.Time >= clint.Mtimecmp));
    }

    [Fact]
    public void TimeCsrFollowsTheDeterministicPortClock()
    {
        using var rig = new Rig(new TestHostPort { TicksPerInstruction = 10 });
        rig.Emit(Rv.Nop, Rv.Nop, Rv.Csrr(A0, 0xC01), Rv.Nop, Rv.Csrr(A1, 0xC01));
        rig.Step(5);
        Assert.Equal(20UL, rig[A0]); // read by the instruction at icount 2
        Assert.Equal(40UL, rig[A1]);
    }

    [Fact]
    public void UartTransmitReachesThePortAndLsrShowsReceivedData()
    {
        using var m = NewMachine();
        var port = (TestHostPort)m.HostPort;
        m.Uart.Write(0, 1, 'O');
        m.Uart.Write(0, 1, 'K');
        Assert.Equal("OK", port.OutputText);
        m.Uart.Read(5, 1, out ulong lsr);
        Assert.Equal(0x60UL, lsr);
        Assert.Equal(1, m.Uart.RxSpace); // FIFO off: one byte
        Assert.Equal(1, m.DeliverSerialInput("xy"u8));
        m.Uart.Read(5, 1, out lsr);
        Assert.Equal(0x61UL, lsr);
        m.Uart.Read(0, 1, out ulong ch);
        Assert.Equal((ulong)'x', ch);
        m.Uart.Read(5, 1, out lsr);
        Assert.Equal(0x60UL, lsr);
    }

    [Fact]
    public void UartDivisorLatchAndScratch()
    {
        using var m = NewMachine();
        m.Uart.Write(3, 1, 0x83); // DLAB on, 8N1
        m.Uart.Write(0, 1, 0x01);
        m.Uart.Write(1, 1, 0x02);
        m.Uart.Read(0, 1, out ulong dll);
        m.Uart.Read(1, 1, out ulong dlm);
        Assert.Equal((1UL, 2UL), (dll, dlm));
        Assert.Equal("", ((TestHostPort)m.HostPort).OutputText); // DLAB writes do not transmit
        m.Uart.Write(3, 1, 0x03);
        m.Uart.Write(7, 1, 0xA5);
        m.Uart.Read(7, 1, out ulong scr);
        Assert.Equal(0xA5UL, scr);
    }

    [Fact]
    public void UartFifoEnabledHolds16AndIirReportsRx()
    {
        using var m = NewMachine();
        m.Uart.Write(2, 1, 0x01);
        m.Uart.Write(1, 1, 0x01);
        Assert.Equal(16, m.DeliverSerialInput(new byte[20]));
        m.Uart.Read(2, 1, out ulong iir);
        Assert.Equal(0xC4UL, iir);
        m.Uart.Write(2, 1, 0x03); // clear RX FIFO
        m.Uart.Read(2, 1, out iir);
        Assert.Equal(0xC1UL, iir);
    }

    [Fact]
    public void PlicClaimCompleteAndThreshold()
    {
        using var m = NewMachine();
        var plic = m.Plic;
        plic.Write(4 * 10, 4, 3);
        plic.Write(4 * 5, 4, 1);
        plic.Write(0x2000, 4, (1u << 10) | (1u << 5));
        plic.SetLevel(5, true);
        plic.SetLevel(10, true);
        Assert.True(plic.MachineExternalPending);
        Assert.True(plic.Read(0x1000, 4, out ulong pending) && pending == ((1u << 10) | (1u << 5)));
        plic.Write(0x20_0000, 4, 3); // threshold 3: priority 3 is not above it
        Assert.False(plic.MachineExternalPending);
        plic.Write(0x20_0000, 4, 0);
        plic.Read(0x20_0004, 4, out ulong first);
        Assert.Equal(10UL, first); // highest priority first
        plic.Read(0x20_0004, 4, out ulong second);
        Assert.Equal(5UL, second);
        plic.Read(0x20_0004, 4, out ulong none);
        Assert.Equal(0UL, none);
        plic.SetLevel(10, false);
        plic.Write(0x20_0004, 4, 10);
        plic.Write(0x20_0004, 4, 5); // still high: pending again
        Assert.True(plic.Read(0x1000, 4, out pending) && pending == 1u << 5);
        Assert.False(plic.Write(0, 1, 0)); // byte access is rejected
    }

    [Fact]
    public void ByteAccessToThePlicIsAnAccessFault()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Lui(A1, 0x0C00_0000), Rv.Lb(A0, A1, 4));
        rig.Step(2);
        rig.AssertTrap(Cause.LoadAccessFault, Rig.Base + 4, 0x0C00_0004);
    }

    [Fact]
    public void RequestStopReturnsAtABoundary()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Jal(Zero, 0));
        rig.M.RequestStop();
        Assert.Equal(StopReason.StopRequested, rig.M.Run());
        Assert.Equal(StopReason.InstructionLimit, rig.M.Run(10)); // the request was consumed
        Assert.Equal(10UL, rig.M.Icount);
    }
}
