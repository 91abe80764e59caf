using LiveMigration.Guest;

namespace LiveMigration.Replayer.Gdb;

/// <summary>
/// The port of a replay that gdb forked by writing memory or registers: it never reads the trace.
/// Time runs on from the fork at a nominal 100 instructions per tick (10 MHz at 1 GIPS), a WFI
/// skips ahead to the next timer deadline, there is no serial input and entropy reads 0. The live
/// fork is deterministic but no longer the recorded run.
/// </summary>
public sealed class ForkedHostPort : IHostPort
{
    private const ulong PollInterval = 16 * 1024;
    private const ulong InstructionsPerTick = 100;
    private readonly ulong _baseIcount;
    private readonly ulong _baseTime;
    private readonly Action<byte>? _output;
    private ulong _nextPoll;

    public ForkedHostPort(Machine machine, Action<byte>? output)
    {
        _baseIcount = machine.Icount;
        _baseTime = machine.Clint.Time;
        _output = output;
    }

    public ulong NextPollIcount => _nextPoll;

    private ulong Now(Machine machine) => Math.Max(machine.Clint.Time, _baseTime + (machine.Icount - _baseIcount) / InstructionsPerTick);

    public void Poll(Machine machine)
    {
        _nextPoll = machine.Icount + PollInterval;
        ulong now = Now(machine);
        ulong edge = machine.NextTimerEdge;
        if (edge != ulong.MaxValue && now >= edge) machine.DeliverTime(now);
    }

    public ulong ReadTime(Machine machine) => Now(machine);

    public bool WaitForInput(Machine machine)
    {
        ulong deadline = machine.TimerDeadline;
        if (deadline == ulong.MaxValue || deadline <= machine.Clint.Time) return false;
        machine.DeliverTime(deadline);
        return true;
    }

    public ushort ReadEntropy(Machine machine) => 0;

    public void SerialOutput(byte value) => _output?.Invoke(value);
}
