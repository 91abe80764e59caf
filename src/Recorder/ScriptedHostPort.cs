using LiveMigration.Guest;
using LiveMigration.Guest.Cpu;

namespace LiveMigration.Recorder;

/// <summary>
/// A deterministic world for tests, benchmarks and golden traces: a virtual clock that advances with
/// the icount (<see cref="TicksPerMillionInstructions"/>) and jumps to mtimecmp when the guest sleeps,
/// serial input from a script delivered as the UART has room, and seeded entropy. Same poll interval
/// and delivery rules as <see cref="LiveHostPort"/>. With a <see cref="TraceRecorder"/> it records.
/// </summary>
public sealed class ScriptedHostPort : IHostPort
{
    private readonly TraceRecorder? _recorder;
    private readonly byte[] _input;
    private int _inputPos;
    private ulong _idleTicks;
    private ulong _nextPoll;
    private ulong _rng;
    private readonly ulong _timeBase;

    /// <param name="timeBase">mtime at icount <paramref name="icountBase"/> (a restored guest continues from its saved time).</param>
    public ScriptedHostPort(byte[]? input = null, TraceRecorder? recorder = null, ulong ticksPerMillionInstructions = 100_000,
        ulong entropySeed = 0x5eed, ulong timeBase = 0, ulong icountBase = 0)
    {
        _input = input ?? [];
        _recorder = recorder;
        TicksPerMillionInstructions = ticksPerMillionInstructions;
        _rng = entropySeed;
        _timeBase = timeBase;
        _icountBase = icountBase;
        _nextPoll = icountBase;
    }

    private readonly ulong _icountBase;

    /// <summary>Virtual clock rate: 100,000 ticks (10 ms) per million instructions is a 100 MIPS machine.</summary>
    public ulong TicksPerMillionInstructions { get; }

    /// <summary>Everything the guest wrote to its UART.</summary>
    public MemoryStream Output { get; } = new();

    public ulong NextPollIcount => _nextPoll;

    public ulong Now(Machine machine) =>
        _timeBase + _idleTicks + (ulong)((UInt128)(machine.Icount - _icountBase) * TicksPerMillionInstructions / 1_000_000);

    public void Poll(Machine machine)
    {
        _recorder?.OnPoll(machine);
        _nextPoll = machine.Icount + LiveHostPort.PollInterval;
        ulong edge = machine.NextTimerEdge;
        if (edge != ulong.MaxValue)
        {
            ulong now = Now(machine);
            if (now >= edge) DeliverTime(machine, now);
        }
        DeliverSerial(machine);
    }

    private bool DeliverSerial(Machine machine)
    {
        int n = Math.Min(machine.Uart.RxSpace, _input.Length - _inputPos);
        if (n <= 0) return false;
        var data = _input.AsSpan(_inputPos, n);
        _recorder?.SerialInput(machine, data);
        if (machine.DeliverSerialInput(data) != n) throw new InvalidOperationException("UART refused input it had room for");
        _inputPos += n;
        return true;
    }

    private void DeliverTime(Machine machine, ulong now)
    {
        _recorder?.TimeDelivered(machine, now);
        machine.DeliverTime(now);
    }

    public ulong ReadTime(Machine machine)
    {
        ulong t = Now(machine);
        _recorder?.TimeRead(machine, t);
        return t;
    }

    /// <summary>Sleeping: input first, else jump the clock to the timer deadline (idle time costs nothing).</summary>
    public bool WaitForInput(Machine machine)
    {
        if (machine.ExternalInterruptsEnabled && DeliverSerial(machine)) return true;
        ulong deadline = machine.TimerDeadline;
        if (deadline == ulong.MaxValue) return false;
        ulong now = Now(machine);
        if (now < deadline) { _idleTicks += deadline - now; now = deadline; }
        DeliverTime(machine, now);
        return true;
    }

    /// <summary>Disk requests complete at once, at the first instruction boundary after the notify.</summary>
    public void BlockRequestsPending(Machine machine)
    {
        int n = machine.BlockRequestsInFlight;
        _recorder?.BlockCompletion(machine, n);
        machine.CompleteBlockRequests(n);
    }

    public ushort ReadEntropy(Machine machine)
    {
        // splitmix64
        ulong z = _rng += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        ushort v = (ushort)(z ^ (z >> 31));
        _recorder?.Entropy(machine, v);
        return v;
    }

    public void SerialOutput(byte value) => Output.WriteByte(value);
}
