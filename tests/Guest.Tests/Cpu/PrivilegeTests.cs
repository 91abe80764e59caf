using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.Tests.Infra;
using static LiveMigration.Guest.Tests.Infra.X;

namespace LiveMigration.Guest.Tests.Cpu;

/// <summary>M/S/U: MRET/SRET, delegation, ecall causes, privileged-instruction gates, interrupt priority.</summary>
public class PrivilegeTests
{
    private const uint Sret = 0x10200073;
    private const uint SfenceVma = 0x12000073;
    private const uint Mstatus_ = 0x300, Medeleg = 0x302, Mideleg = 0x303, Mie = 0x304, Mip = 0x344, Mcounteren = 0x306;
    private const uint Stvec = 0x105, Sepc = 0x141, Scause = 0x142, Satp = 0x180, Sie = 0x104, Sip = 0x144;

    /// <summary>Drops to <paramref name="priv"/> at <see cref="Rig.Base"/> + 0x100 (code goes there) with an open PMP.</summary>
    private static unsafe Rig InMode(uint priv, ulong mstatusExtra = 0)
    {
        var rig = new Rig();
        ref var c = ref rig.M.Cpu;
        c.Mstatus = Mstatus.Xlen64 | ((ulong)priv << Mstatus.MppShift) | mstatusExtra;
        c.Mepc = Rig.Base + 0x100;
        c.PmpAddr[0] = ulong.MaxValue;
        c.PmpCfg[0] = 0x1F; // NAPOT, RWX: S and U may touch everything
        rig.Emit(Rv.Mret);
        rig.Step();
        Assert.Equal(priv, rig.M.Cpu.Priv);
        Assert.Equal(Rig.Base + 0x100, rig.M.Pc);
        return rig;
    }

    private static void At(Rig rig, ulong address, params uint[] words)
    {
        var bytes = new List<byte>();
        foreach (uint w in words) bytes.AddRange(BitConverter.GetBytes(w));
        rig.M.Memory.Write(address, bytes.ToArray());
    }

    [Theory]
    [InlineData(Priv.U, Cause.EcallFromU)]
    [InlineData(Priv.S, Cause.EcallFromS)]
    public void EcallCauseNamesTheModeAndMppRemembersIt(uint priv, ulong cause)
    {
        using var rig = InMode(priv);
        At(rig, Rig.Base + 0x100, Rv.Ecall);
        rig.Step();
        rig.AssertTrap(cause, Rig.Base + 0x100, 0);
        Assert.Equal(Priv.M, rig.M.Cpu.Priv);
        Assert.Equal((ulong)priv << Mstatus.MppShift, rig.M.Cpu.Mstatus & Mstatus.MPP);
    }

    [Fact]
    public void DelegatedEcallFromUGoesToStvecAndSretReturns()
    {
        using var rig = InMode(Priv.U);
        rig.M.Cpu.Medeleg = 1UL << (int)Cause.EcallFromU;
        rig.M.Cpu.Stvec = Rig.Base + 0x200;
        rig.M.Cpu.Mstatus |= Mstatus.SIE;
        At(rig, Rig.Base + 0x100, Rv.Ecall, Rv.Addi(A0, Zero, 7));
        // S handler: sepc += 4; sret
        At(rig, Rig.Base + 0x200, Rv.Csrr(T0, Sepc), Rv.Addi(T0, T0, 4), Rv.Csrw(Sepc, T0), Sret);
        rig.Step();
        Assert.Equal(Priv.S, rig.M.Cpu.Priv);
        Assert.Equal(Rig.Base + 0x200, rig.M.Pc);
        Assert.Equal(Cause.EcallFromU, rig.M.Cpu.Scause);
        Assert.Equal(Rig.Base + 0x100, rig.M.Cpu.Sepc);
        Assert.Equal(Mstatus.SPIE, rig.M.Cpu.Mstatus & (Mstatus.SPIE | Mstatus.SIE | Mstatus.SPP)); // SIE -> SPIE, SPP = U
        rig.Step(4);
        Assert.Equal(Priv.U, rig.M.Cpu.Priv);
        Assert.Equal(Rig.Base + 0x104, rig.M.Pc);
        Assert.Equal(Mstatus.SIE | Mstatus.SPIE, rig.M.Cpu.Mstatus & (Mstatus.SPIE | Mstatus.SIE | Mstatus.SPP));
        rig.Step();
        Assert.Equal(7UL, rig[A0]);
    }

    [Fact]
    public void DelegationDoesNotApplyInMachineMode()
    {
        using var rig = new Rig();
        rig.M.Cpu.Medeleg = Cause.Delegable;
        rig.M.Cpu.Stvec = Rig.Base + 0x200;
        rig.Emit(Rv.Ebreak);
        rig.Step();
        rig.AssertTrap(Cause.Breakpoint, Rig.Base, 0);
    }

    public static TheoryData<string, uint, uint, ulong> Gated => new()
    {
        { "mret in S", Priv.S, Rv.Mret, 0 },
        { "sret in U", Priv.U, Sret, 0 },
        { "sret in S with TSR", Priv.S, Sret, Mstatus.TSR },
        { "wfi in U", Priv.U, Rv.Wfi, 0 },
        { "wfi in S with TW", Priv.S, Rv.Wfi, Mstatus.TW },
        { "sfence.vma in U", Priv.U, SfenceVma, 0 },
        { "sfence.vma in S with TVM", Priv.S, SfenceVma, Mstatus.TVM },
        { "satp in S with TVM", Priv.S, Rv.Csrr(A0, Satp), Mstatus.TVM },
        { "mstatus in S", Priv.S, Rv.Csrr(A0, Mstatus_), 0 },
        { "sstatus in U", Priv.U, Rv.Csrr(A0, 0x100), 0 },
        { "cycle in S without mcounteren.CY", Priv.S, Rv.Csrr(A0, 0xC00), 0 },
        { "seed in S", Priv.S, Rv.Csrrw(A0, 0x015, Zero), 0 },
    };

    [Theory, MemberData(nameof(Gated))]
    public void PrivilegedInstructionsAreIllegalBelowTheirLevel(string name, uint priv, uint insn, ulong mstatus)
    {
        _ = name;
        using var rig = InMode(priv, mstatus);
        At(rig, Rig.Base + 0x100, insn);
        rig.Step();
        rig.AssertTrap(Cause.IllegalInstruction, Rig.Base + 0x100, insn);
    }

    [Fact]
    public void CounterEnablesOpenCyclePerMode()
    {
        using var rig = InMode(Priv.U);
        rig.M.Cpu.Mcounteren = 1;
        At(rig, Rig.Base + 0x100, Rv.Csrr(A0, 0xC00));
        rig.Step();
        rig.AssertTrap(Cause.IllegalInstruction, Rig.Base + 0x100, Rv.Csrr(A0, 0xC00)); // scounteren still closed

        using var s = InMode(Priv.S);
        s.M.Cpu.Mcounteren = 1;
        At(s, Rig.Base + 0x100, Rv.Csrr(A0, 0xC00));
        s.Step();
        s.AssertNoTrap();
    }

    [Fact]
    public void SieAndSipAreViewsThroughMideleg()
    {
        using var rig = new Rig();
        rig.Emit(Rv.Csrw(Mideleg, A1), Rv.Csrw(Mie, A2), Rv.Csrr(A3, Sie), Rv.Csrw(Sip, A2), Rv.Csrr(A4, Mip), Rv.Csrr(A5, Mideleg));
        rig[A1] = ulong.MaxValue;
        rig[A2] = ulong.MaxValue;
        rig.Step(6);
        rig.AssertNoTrap();
        Assert.Equal(Irq.Delegable, rig[A5]);
        Assert.Equal(Irq.SSIP | Irq.STIP | Irq.SEIP | Irq.LCOFIP, rig[A3]);
        Assert.Equal(Irq.SSIP | Irq.LCOFIP, rig[A4] & (Irq.SSIP | Irq.LCOFIP)); // sip writes reach SSIP (and LCOFIP) only
        Assert.Equal(0UL, rig[A4] & Irq.SEIP);
    }

    [Fact]
    public void MachineInterruptsOutrankSupervisorOnesAndTheOrderIsMeiMsiMtiSeiSsiSti()
    {
        using var rig = InMode(Priv.U);
        ref var c = ref rig.M.Cpu;
        c.Mideleg = Irq.SSIP | Irq.STIP | Irq.SEIP;
        c.Mie = Irq.SSIP | Irq.STIP | Irq.SEIP | Irq.MSIP;
        c.MipSoft = Irq.SSIP | Irq.STIP | Irq.SEIP;
        c.Stvec = Rig.Base + 0x300;
        At(rig, Rig.Base + 0x100, Rv.Nop, Rv.Nop);
        rig.M.Clint.Write(0, 4, 1); // MSIP
        rig.Step();
        Assert.Equal(Cause.MachineSoftwareInterrupt, rig.M.Cpu.Mcause);
        Assert.Equal(Priv.M, rig.M.Cpu.Priv);

        using var s = InMode(Priv.U);
        ref var d = ref s.M.Cpu;
        d.Mideleg = Irq.SSIP | Irq.STIP | Irq.SEIP;
        d.Mie = Irq.SSIP | Irq.STIP | Irq.SEIP;
        d.MipSoft = Irq.SSIP | Irq.STIP | Irq.SEIP;
        d.Stvec = Rig.Base + 0x300;
        At(s, Rig.Base + 0x100, Rv.Nop, Rv.Nop);
        At(s, Rig.Base + 0x300, Rv.Nop, Rv.Nop);
        s.Step(); // the interrupt is taken before the step's one instruction, the handler's first
        Assert.Equal(Priv.S, s.M.Cpu.Priv);
        Assert.Equal(Cause.SupervisorExternalInterrupt, s.M.Cpu.Scause);
        Assert.Equal(Rig.Base + 0x100, s.M.Cpu.Sepc);
        Assert.Equal(Rig.Base + 0x304, s.M.Pc);
    }

    [Fact]
    public void SupervisorInterruptsWaitWhileInSWithSieClear()
    {
        using var rig = InMode(Priv.S);
        ref var c = ref rig.M.Cpu;
        c.Mideleg = Irq.SSIP;
        c.Mie = Irq.SSIP;
        c.MipSoft = Irq.SSIP;
        At(rig, Rig.Base + 0x100, Rv.Nop, Rv.Nop);
        rig.Step(2);
        Assert.Equal(Rig.Base + 0x108, rig.M.Pc);
        Assert.Equal(Priv.S, rig.M.Cpu.Priv);
    }

    [Fact]
    public void SstcDrivesStipFromTimeAndStimecmp()
    {
        using var rig = new Rig();
        ref var c = ref rig.M.Cpu;
        c.Menvcfg = Envcfg.STCE;
        c.Stimecmp = 100;
        rig.M.DeliverTime(99);
        Assert.Equal(0UL, rig.M.Mip & Irq.STIP);
        rig.M.DeliverTime(100);
        Assert.Equal(Irq.STIP, rig.M.Mip & Irq.STIP);
        c.Menvcfg = 0;
        Assert.Equal(0UL, rig.M.Mip & Irq.STIP); // without STCE, STIP is the software bit
    }
}
