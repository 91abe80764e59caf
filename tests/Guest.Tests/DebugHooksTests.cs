using LiveMigration.Guest.Tests.Infra;
using LiveMigration.Guest.Debug;

namespace LiveMigration.Guest.Tests;

/// <summary>Breakpoints and watchpoints stop the machine at the right instruction, compiled or not.</summary>
public class DebugHooksTests
{
    // A counting loop: x5 counts down from 1000, each trip stores x5 to 0x80100004 + (x5 & 0xF8).
    //   0: addi x5, x0, 1000     4: auipc x6, 0x100 (x6 = 0x80100004)     8: andi x7, x5, 0xF8    c: add x7, x7, x6
    //  10: sd x5, 0(x7)         14: addi x5, x5, -1    18: bne x5, x0, -16 (to 8)
    //  1c: lui x8, 0x100        20: lui x9, 0x5        24: addi x9, x9, 0x555  28: sw x9, 0(x8)
    private static readonly uint[] Loop =
    [
        0x3E800293, 0x00100317, 0x0F82F393, 0x006383B3,
        0x0053B023, 0xFFF28293, 0xFE0298E3,
        0x00100437, 0x000054B7, 0x55548493, 0x00942023,
    ];

    private static Machine Load(bool compile)
    {
        var m = new Machine(new MachineConfig { MemorySize = 4 << 20 }, NullHostPort.Instance, compile, EagerCompile.Threshold);
        var bytes = new byte[Loop.Length * 4];
        Buffer.BlockCopy(Loop, 0, bytes, 0, bytes.Length);
        m.Memory.Write(0x8000_0000, bytes);
        m.Reset(0x8000_0000);
        return m;
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BreakpointStopsBeforeItsInstructionEveryTrip(bool compile)
    {
        using var m = Load(compile);
        Assert.Equal(StopReason.InstructionLimit, m.Run(3000)); // let the loop get hot and compiled
        m.Debug.AddBreakpoint(0x8000_0010);
        for (int trip = 0; trip < 5; trip++)
        {
            ulong x5 = m.GetRegister(5);
            Assert.Equal(StopReason.Debug, m.Run());
            Assert.Equal(0x8000_0010UL, m.Pc);
            Assert.False(m.Debug.LastStop!.Value.IsWatchpoint);
            if (trip > 0) Assert.Equal(x5 - 1, m.GetRegister(5));
        }
        m.Debug.RemoveBreakpoint(0x8000_0010);
        Assert.Equal(StopReason.Exited, m.Run());
        Assert.Equal(0, m.ExitCode);
    }

    [Theory]
    [InlineData(false, WatchKind.Write)]
    [InlineData(true, WatchKind.Write)]
    [InlineData(true, WatchKind.Access)]
    public void WatchpointStopsAfterTheStoreThatHitsIt(bool compile, WatchKind kind)
    {
        using var m = Load(compile);
        Assert.Equal(StopReason.InstructionLimit, m.Run(3000));
        m.Debug.AddWatchpoint(new Watchpoint(0x8010_0044, 8, kind));
        Assert.Equal(StopReason.Debug, m.Run());
        var stop = m.Debug.LastStop!.Value;
        Assert.True(stop.IsWatchpoint);
        Assert.Equal(0x8000_0010UL, stop.Pc);     // the sd
        Assert.Equal(0x8000_0014UL, m.Pc);        // stopped after it
        Assert.Equal(0x40UL, m.GetRegister(5) & 0xF8);
        var value = new byte[8];
        m.Memory.Read(0x8010_0044, value);
        Assert.Equal(m.GetRegister(5), BitConverter.ToUInt64(value));
    }

    [Fact]
    public void ReadWatchpointSeesLoads()
    {
        // auipc x6, 0x100 (x6 = 0x80100000) ; ld x7, 0x48(x6) ; then the finisher sequence
        uint[] code = [0x00100317, 0x04833383, 0x00100437, 0x000054B7, 0x55548493, 0x00942023];
        using var m = new Machine(new MachineConfig { MemorySize = 4 << 20 }, NullHostPort.Instance, compileThreshold: EagerCompile.Threshold);
        var bytes = new byte[code.Length * 4];
        Buffer.BlockCopy(code, 0, bytes, 0, bytes.Length);
        m.Memory.Write(0x8000_0000, bytes);
        m.Reset(0x8000_0000);
        m.Debug.AddWatchpoint(new Watchpoint(0x8010_0048, 4, WatchKind.Read));
        Assert.Equal(StopReason.Debug, m.Run());
        Assert.Equal(0x8000_0004UL, m.Debug.LastStop!.Value.Pc);
        Assert.Equal(0x8000_0008UL, m.Pc);
        Assert.Equal(StopReason.Exited, m.Run());
    }
}
