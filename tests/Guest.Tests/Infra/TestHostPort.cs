using System.Text;
using LiveMigration.Guest.Cpu;

namespace LiveMigration.Guest.Tests.Infra;

/// <summary>
/// A deterministic host port: mtime is a pure function of icount (plus the time skipped in WFI),
/// serial input is a script of (icount, bytes), and output goes to a buffer. <see cref="Clone"/>
/// copies its state so a restored machine sees exactly the inputs the original would have.
/// </summary>
public sealed class TestHostPort : IHostPort
{
    /// <summary>How often the machine polls us: small enough that the 1-byte UART drains input quickly.</summary>
    public ulong PollInterval { get; init; } = 512;
    /// <summary>mtime ticks per retired instruction (10 = a 100 MIPS guest at 10 MHz mtime).</summary>
    public ulong TicksPerInstruction { get; init; } = 10;
    public ushort Entropy { get; set; } = 0x5A5A;

    private readonly List<(ulong Icount, byte[] Data)> _script = [];
    private int _scriptIndex, _scriptOffset;
    private ulong _skew, _lastTime, _nextPoll, _lastPoll = ulong.MaxValue;
    private readonly List<(ulong Icount, ulong Time)> _timeEvents = [];
    private int _timeIndex;
    private readonly MemoryStream _output = new();

    public byte[] Output => _output.ToArray();
    public string OutputText => Encoding.ASCII.GetString(_output.ToArray());

    /// <summary>Queues serial input to become available at <paramref name="icount"/>.</summary>
    public TestHostPort Input(ulong icount, byte[] data)
    {
        _script.Add((icount, data));
        _script.Sort((a, b) => a.Icount.CompareTo(b.Icount));
        return this;
    }

    public TestHostPort Input(ulong icount, string text) => Input(icount, Encoding.ASCII.GetBytes(text));

    /// <summary>Delivers time <paramref name="time"/> (a CLINT update) exactly at <paramref name="icount"/>.</summary>
    public TestHostPort TimeAt(ulong icount, ulong time)
    {
        _timeEvents.Add((icount, time));
        _timeEvents.Sort((a, b) => a.Icount.CompareTo(b.Icount));
        return this;
    }

    public ulong NextPollIcount
    {
        get
        {
            ulong next = _nextPoll;
            if (_timeIndex < _timeEvents.Count) next = Math.Min(next, _timeEvents[_timeIndex].Icount);
            // Input already tried (the UART was full) waits for the regular poll instead of single-stepping.
            if (_scriptIndex < _script.Count && _script[_scriptIndex].Icount > _lastPoll) next = Math.Min(next, _script[_scriptIndex].Icount);
            return next;
        }
    }

    private ulong TimeNow(Machine m)
    {
        ulong t = m.Icount * TicksPerInstruction + _skew;
        if (t < _lastTime) t = _lastTime; // never backwards, even after a scripted jump
        _lastTime = t;
        return t;
    }

    public void Poll(Machine machine)
    {
        if (machine.Icount >= _nextPoll) _nextPoll = machine.Icount + PollInterval;
        _lastPoll = machine.Icount;
        while (_timeIndex < _timeEvents.Count && _timeEvents[_timeIndex].Icount <= machine.Icount)
        {
            ulong t = _timeEvents[_timeIndex++].Time;
            _lastTime = Math.Max(_lastTime, t);
            machine.DeliverTime(t);
        }
        var clint = machine.Clint;
        if (clint.Mtimecmp != ulong.MaxValue && clint.Time < clint.Mtimecmp)
        {
            ulong now = TimeNow(machine);
            if (now >= clint.Mtimecmp) machine.DeliverTime(now);
        }
        DeliverSerial(machine);
    }

    private bool DeliverSerial(Machine machine)
    {
        bool any = false;
        while (_scriptIndex < _script.Count && _script[_scriptIndex].Icount <= machine.Icount)
        {
            var data = _script[_scriptIndex].Data.AsSpan(_scriptOffset);
            int n = machine.DeliverSerialInput(data);
            any |= n > 0;
            _scriptOffset += n;
            if (_scriptOffset < _script[_scriptIndex].Data.Length) break; // UART full: retry at the next poll
            _scriptIndex++;
            _scriptOffset = 0;
        }
        // Input that did not fit is retried at the next regular poll, not on every instruction.
        return any;
    }

    public ulong ReadTime(Machine machine) => TimeNow(machine);

    public bool WaitForInput(Machine machine)
    {
        // Serial input scheduled in the future arrives now: the guest would have slept until then.
        if (_scriptIndex < _script.Count)
        {
            if (_script[_scriptIndex].Icount > machine.Icount)
                _script[_scriptIndex] = (machine.Icount, _script[_scriptIndex].Data);
            if (DeliverSerial(machine)) return true;
        }
        var clint = machine.Clint;
        if ((machine.Cpu.Mie & Irq.MTIP) != 0 && clint.Mtimecmp != ulong.MaxValue)
        {
            ulong now = TimeNow(machine);
            if (now < clint.Mtimecmp)
            {
                _skew += clint.Mtimecmp - now; // skip the idle time
                now = TimeNow(machine);
            }
            machine.DeliverTime(now);
            return true;
        }
        return false;
    }

    public ushort ReadEntropy(Machine machine) => Entropy;

    public void SerialOutput(byte value) => _output.WriteByte(value);

    /// <summary>A port in the same state, for a machine restored from a state saved now.</summary>
    public TestHostPort Clone()
    {
        var c = new TestHostPort { PollInterval = PollInterval, TicksPerInstruction = TicksPerInstruction, Entropy = Entropy };
        c._script.AddRange(_script);
        c._scriptIndex = _scriptIndex;
        c._scriptOffset = _scriptOffset;
        c._skew = _skew;
        c._lastTime = _lastTime;
        c._nextPoll = _nextPoll;
        c._lastPoll = _lastPoll;
        c._timeEvents.AddRange(_timeEvents);
        c._timeIndex = _timeIndex;
        c._output.Write(_output.ToArray());
        return c;
    }
}
