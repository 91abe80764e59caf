using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.Tests.Infra;
using static LiveMigration.Guest.Tests.Infra.X;

namespace LiveMigration.Guest.Tests.Cpu;

/// <summary>Interrupts, WFI and the exact instruction count they are keyed on.</summary>
public class InterruptTests
{
    private const uint MieCsr = 0x304, MstatusCsr = 0x300;
    private const ulong ClintBase = 0x0200_0000;

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(1000)]
    [InlineData(5000)] // longer than the test port's poll interval
    public void IcountIsExact(int n)
    {
        using var rig = new Rig();
        // A loop: addi a0, a0, 1; jal x0, -4 — runs forever, so only the limit stops it.
        rig.Emit(Rv.Addi(A0, A0, 1), Rv.Jal(Zero, -4));
        Assert.Equal(StopReason.InstructionLimit, rig.M.Run((ulong)n));
        Assert.Equal((ulong)n, rig.M.Icount);
        Assert.Equal((ulong)(n + 1) / 2, rig[A0]);
        // Running on in small steps adds exactly what was asked.
        for (int i = 0; i < 3; i++) rig.Step(3);
        Assert.Equal((ulong)n + 9, rig.M.Icount);
    }

    [Theory]
    [InlineData(37UL)]
    [InlineData(512UL)] // on a regular poll boundary
    [InlineData(1001UL)]
    public void TimerDeliveredAtAnIcountInterruptsExactlyThere(ulong at)
    {
        // Time stands still except for one scripted delivery at icount `at`.
        var port = new TestHostPort { TicksPerInstruction = 0 }.TimeAt(at, 500);
        using var rig = new Rig(port);
        rig.Emit(Rv.Lui(A4, 0x0200_4000), Rv.Addi(A2, Zero, 500), Rv.Sd(A2, A4, 0), // mtimecmp = 500
                 Rv.Addi(A3, Zero, 0x80), Rv.Csrrs(Zero, MieCsr, A3), Rv.Csrrsi(Zero, MstatusCsr, 8));
        for (int i = 0; i < 1100; i++) rig.Emit(Rv.Addi(A0, A0, 1));
        rig.M.Run(at + 100);
        Assert.Equal(Cause.MachineTimerInterrupt, rig.M.Cpu.Mcause);
        // Taken between instructions, before instruction number `at`: mepc is its address.
        Assert.Equal(Rig.Base + 4 * at, rig.M.Cpu.Mepc);
        Assert.Equal(at - 6, rig[A0]);
        Assert.Equal(Mstatus.MPIE, rig.M.Cpu.Mstatus & (Mstatus.MIE | Mstatus.MPIE));
        Assert.Equal(Rig.TrapVector, rig.M.Pc);
        Assert.Equal(at + 100, rig.M.Icount);
    }

    [Fact]
    public void WfiSleepsUntilTheTimerAndResumesAfterIt()
    {
        var port = new TestHostPort { TicksPerInstruction = 1 };
        using var rig = new Rig(port);
        rig.Emit(Rv.Lui(A1, 0x0200_4000), Rv.Lui(A2, 0x1000_0000), Rv.Sd(A2, A1, 0), // mtimecmp = 0x1000_0000 ticks
                 Rv.Addi(A3, Zero, 0x80), Rv.Csrrs(Zero, MieCsr, A3), Rv.Csrrsi(Zero, MstatusCsr, 8),
                 Rv.Wfi, Rv.Addi(A0, Zero, 1));
        var reason = rig.M.Run(100);
        Assert.Equal(StopReason.InstructionLimit, reason);
        Assert.Equal(Cause.MachineTimerInterrupt, rig.M.Cpu.Mcause);
        Assert.Equal(Rig.Base + 28, rig.M.Cpu.Mepc); // the instruction after wfi
        Assert.Equal(0UL, rig[A0]);
        Assert.True(rig.M.Clint.Time >= 0x1000_0000, "time skipped forward to the deadline");
        Assert.Equal(0u, rig.M.Cpu.Waiting);
    }

    [Fact]
    public void WfiWakesWithMieClearAndContinuesWithoutTrapping()
    {
        var port = new TestHostPort { TicksPerInstruction = 1 };
        using var rig = new Rig(port);
        rig.Emit(Rv.Lui(A1, 0x0200_4000), Rv.Addi(A2, Zero, 100), Rv.Sd(A2, A1, 0),
                 Rv.Addi(A3, Zero, 0x80), Rv.Csrrs(Zero, MieCsr, A3), Rv.Wfi, Rv.Addi(A0, Zero, 1));
        rig.M.Run(7);
        rig.AssertNoTrap();
        Assert.Equal(1UL, rig[A0]);
        Assert.Equal(7UL, rig.M.Icount);
    }

    [Fact]
    public void WfiWithNothingArmedIsIdle()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Wfi, Rv.Nop);
        Assert.Equal(StopReason.Idle, rig.M.Run(100));
        Assert.Equal(1UL, rig.M.Icount);
        Assert.Equal(Rig.Base + 4, rig.M.Pc);
    }

    [Fact]
    public void SoftwareInterruptIsTakenRightAfterTheStoreThatRaisesIt()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Addi(A3, Zero, 8), Rv.Csrrs(Zero, MieCsr, A3), Rv.Csrrsi(Zero, MstatusCsr, 8),
                 Rv.Lui(A1, 0x0200_0000), Rv.Addi(A2, Zero, 1), Rv.Sw(A2, A1, 0), Rv.Addi(A0, Zero, 1));
        rig.M.Run(6);
        Assert.Equal(Rig.Base + 24, rig.M.Pc); // pending, taken at the next boundary Run passes
        rig.M.Run(7);
        Assert.Equal(Rig.TrapVector, rig.M.Pc);
        Assert.Equal(Cause.MachineSoftwareInterrupt, rig.M.Cpu.Mcause);
        Assert.Equal(Rig.Base + 24, rig.M.Cpu.Mepc);
        Assert.Equal(0UL, rig[A0]);
        Assert.Equal(7UL, rig.M.Icount); // six instructions and the handler's first: taking an interrupt retires nothing
    }

    [Fact]
    public void PendingInterruptWaitsForMieThenFiresBeforeTheNextInstruction()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Addi(A3, Zero, 8), Rv.Csrrs(Zero, MieCsr, A3),
                 Rv.Lui(A1, 0x0200_0000), Rv.Addi(A2, Zero, 1), Rv.Sw(A2, A1, 0),
                 Rv.Addi(A0, Zero, 1), Rv.Csrrsi(Zero, MstatusCsr, 8), Rv.Addi(A0, Zero, 2));
        rig.M.Run(8);
        Assert.Equal(1UL, rig[A0]); // ran with MIE clear; the second addi never ran
        Assert.Equal(Cause.MachineSoftwareInterrupt, rig.M.Cpu.Mcause);
        Assert.Equal(Rig.Base + 28, rig.M.Cpu.Mepc);
    }

    [Theory]
    [InlineData(Irq.MSIP, 3UL)]
    [InlineData(Irq.MTIP, 7UL)]
    [InlineData(Irq.MEIP, 11UL)]
    public void VectoredModeJumpsToBasePlus4TimesCause(ulong bit, ulong code)
    {
        using var rig = new Rig();
        ulong vector = Rig.Base + 0x2000;
        foreach (ulong c in new ulong[] { 3, 7, 11 }) rig.M.Memory.Write(vector + 4 * c, BitConverter.GetBytes(Rv.Jal(Zero, 0)));
        RaiseAll(rig);
        rig.M.Cpu.Mtvec = vector | 1;
        rig.M.Cpu.Mie = bit;
        rig.M.Cpu.Mstatus = Mstatus.MIE;
        rig.Emit(Rv.Nop);
        rig.M.Run(1);
        Assert.Equal(Cause.InterruptBit | code, rig.M.Cpu.Mcause);
        Assert.Equal(vector + 4 * code, rig.M.Pc);
        Assert.Equal(Rig.Base, rig.M.Cpu.Mepc);
        Assert.Equal(0UL, rig.M.Cpu.Mtval);
    }

    /// <summary>Asserts msip, the timer (mtimecmp 0, time 1) and the UART's RX line through the PLIC.</summary>
    private static void RaiseAll(Rig rig)
    {
        rig.M.Clint.Write(0, 4, 1);
        rig.M.Clint.Write(0x4000, 8, 0);
        rig.M.DeliverTime(1);
        rig.M.Plic.Write(4 * 10, 4, 1);          // priority of source 10
        rig.M.Plic.Write(0x2000, 4, 1u << 10);  // enable for context 0
        rig.M.Uart.Write(1, 1, 1);               // UART IER: RX data available
        rig.M.DeliverSerialInput("x"u8);
    }

    [Fact]
    public void ExternalBeatsSoftwareBeatsTimer()
    {
        using var rig = new Rig();
        RaiseAll(rig);
        Assert.Equal(Irq.MSIP | Irq.MTIP | Irq.MEIP, rig.M.Mip);
        rig.Emit(Rv.Nop);
        ulong n = 0;
        foreach (var (mie, cause) in new[] { (Irq.MSIP | Irq.MTIP | Irq.MEIP, Cause.MachineExternalInterrupt),
                                             (Irq.MSIP | Irq.MTIP, Cause.MachineSoftwareInterrupt),
                                             (Irq.MTIP, Cause.MachineTimerInterrupt) })
        {
            rig.M.Cpu.Mie = mie;
            rig.M.Cpu.Mstatus = Mstatus.MIE;
            rig.M.Run(++n);
            Assert.Equal(cause, rig.M.Cpu.Mcause);
            Assert.Equal(Rig.TrapVector, rig.M.Pc);
        }
    }
}
