using System.Diagnostics;
using LiveMigration.Guest;
using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.Devices.Clint;
using LiveMigration.Recorder.Serial;

namespace LiveMigration.Recorder;

/// <summary>
/// The real world as the machine sees it: the host clock at 10 MHz, serial input from a backend.
/// It polls every <see cref="PollInterval"/> instructions: time is delivered only when it crosses
/// mtimecmp (so a trace holds one time event per timer interrupt, not one per poll), and input only
/// as far as the UART has room. A subclass logs what enters through the Deliver* hooks (a recorder,
/// a migrating host's port).
/// </summary>
public class LiveHostPort : IHostPort
{
    public const ulong PollInterval = 16 * 1024;

    private ISerialBackend _serial;
    private long _startTimestamp = Stopwatch.GetTimestamp();
    private ulong _timeBase;
    private ulong _nextPoll;
    private long _lastFlush;

    /// <param name="timeBase">mtime at start: a restored guest continues from its saved time.</param>
    public LiveHostPort(ISerialBackend serial, ulong timeBase = 0)
    {
        _serial = serial;
        _timeBase = timeBase;
    }

    public ISerialBackend Serial => _serial;

    /// <summary>Another backend from now on (only while the guest is paused).</summary>
    protected void ReplaceSerial(ISerialBackend serial) => _serial = serial;

    /// <summary>Guest time continues from <paramref name="timeBase"/> now (a port built ahead of a migration's resume).</summary>
    public virtual void Rebase(ulong timeBase)
    {
        _timeBase = timeBase;
        _startTimestamp = Stopwatch.GetTimestamp();
    }

    public ulong NextPollIcount => _nextPoll;

    /// <summary>The host clock in guest ticks; never goes backwards.</summary>
    // A TimeSpan tick is 100 ns, exactly one tick of the 10 MHz mtime.
    public ulong Now => _timeBase + (ulong)Stopwatch.GetElapsedTime(_startTimestamp).Ticks;

    public virtual void Poll(Machine machine)
    {
        _nextPoll = machine.Icount + PollInterval;
        PollInputs(machine);
    }

    /// <summary>The next poll is due a poll interval from now; nothing is delivered at this one.</summary>
    protected void SkipPoll(Machine machine) => _nextPoll = machine.Icount + PollInterval;

    /// <summary>What every poll delivers: the timer's edge once crossed, serial input; and a periodic output flush.</summary>
    protected void PollInputs(Machine machine)
    {
        ulong edge = machine.NextTimerEdge;
        if (edge != ulong.MaxValue)
        {
            ulong now = Now;
            if (now >= edge) DeliverTime(machine, now);
        }
        DeliverSerial(machine);
        long t = Stopwatch.GetTimestamp();
        if (t - _lastFlush > Stopwatch.Frequency / 100) { _serial.Flush(); _lastFlush = t; }
    }

    private void DeliverSerial(Machine machine)
    {
        int room = machine.Uart.RxSpace;
        if (room <= 0) return;
        Span<byte> buffer = stackalloc byte[room];
        int n = _serial.Read(buffer);
        if (n > 0) DeliverSerialInput(machine, buffer[..n]);
    }

    /// <summary>The single place time enters the machine (a recorder logs it here).</summary>
    protected virtual void DeliverTime(Machine machine, ulong now) => machine.DeliverTime(now);

    /// <summary>The single place serial input enters the machine (a recorder logs it here).</summary>
    protected virtual void DeliverSerialInput(Machine machine, ReadOnlySpan<byte> data)
    {
        int accepted = machine.DeliverSerialInput(data);
        if (accepted != data.Length) throw new InvalidOperationException("UART refused input it had room for");
    }

    public virtual ulong ReadTime(Machine machine) => Now;

    /// <summary>The disk's requests complete at once: the overlay answers from memory (a flush syncs the image here too).</summary>
    public void BlockRequestsPending(Machine machine) => CompleteBlockRequests(machine, machine.BlockRequestsInFlight);

    /// <summary>The single place disk completions enter the machine (a recorder logs them here).</summary>
    protected virtual void CompleteBlockRequests(Machine machine, int count) => machine.CompleteBlockRequests(count);

    /// <summary>True when a wait in WFI should end at once (the machine has a stop request to see).</summary>
    protected virtual bool WakeRequested => false;

    public bool WaitForInput(Machine machine)
    {
        _serial.Flush();
        ulong deadline = machine.TimerDeadline;
        bool timerArmed = deadline != ulong.MaxValue;
        bool serialArmed = machine.ExternalInterruptsEnabled && !_serial.InputClosed;
        if (!timerArmed && !serialArmed) return false;

        while (true)
        {
            if (WakeRequested) return true; // the machine sees its stop request at the top of its loop
            ulong now = Now;
            if (timerArmed && now >= deadline)
            {
                DeliverTime(machine, now);
                return true;
            }
            // Input that is already queued goes in before sleeping: its arrival signal may have been
            // consumed by an earlier wait, and waiting first costs up to a second per byte.
            int before = machine.Uart.RxSpace;
            DeliverSerial(machine);
            if (machine.Uart.RxSpace != before) return true;
            if (_serial.InputClosed && !timerArmed) return false;
            int waitMs = timerArmed ? (int)Math.Min((deadline - now) / (Clint.Frequency / 1000) + 1, 1000) : 1000;
            _serial.InputArrived.WaitOne(waitMs);
        }
    }

    public virtual ushort ReadEntropy(Machine machine) => (ushort)System.Security.Cryptography.RandomNumberGenerator.GetInt32(0x10000);

    public void SerialOutput(byte value) => _serial.Write(value);
}
