using System.Diagnostics;
using LiveMigration.Guest;
using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.Devices.Clint;
using LiveMigration.Recorder;

namespace LiveMigration.Migration.Hosting;

/// <summary>
/// The live host port of a hosted guest: host clock at 10 MHz, console input, entropy. Unlike a
/// plain live port it can be woken from WFI (so a pause is prompt even for a guest waiting on
/// input), can log its inputs (<see cref="Log"/>) and can throttle the guest (auto-converge).
/// </summary>
public sealed class GuestHostPort : IHostPort
{
    public const ulong PollInterval = 16 * 1024;

    private ConsoleEndpoint _console;
    private long _start = Stopwatch.GetTimestamp();
    private ulong _timeBase;
    private ulong _nextPoll;
    private long _lastFlush;
    private volatile bool _wake;
    private long _lastPollTicks = Stopwatch.GetTimestamp();
    private double _throttleDebt;
    private long _throttledTicks;

    public GuestHostPort(ConsoleEndpoint console, ulong timeBase = 0)
    {
        _console = console;
        _timeBase = timeBase;
    }

    public ConsoleEndpoint Console => _console;

    /// <summary>A new console for a paused guest (a migration that closed the old one rolled back).</summary>
    public void ReplaceConsole(ConsoleEndpoint console) => _console = console;

    /// <summary>Guest time continues from <paramref name="timeBase"/> now (a port built ahead of a migration's resume).</summary>
    public void Rebase(ulong timeBase)
    {
        _timeBase = timeBase;
        _start = _lastPollTicks = Stopwatch.GetTimestamp();
    }

    /// <summary>Set while a migration records this guest's inputs; swapped only while the guest is paused.</summary>
    public IInputLog? Log { get; set; }

    /// <summary>The host's run permit (fleet fencing); null: no limit.</summary>
    public RunPermit? Permit { get; set; }

    /// <summary>Fraction of wall time the guest is held back (0 = full speed, 0.9 = runs 10 % of the time).</summary>
    public double Throttle { get; set; }

    /// <summary>Wall time spent throttled so far.</summary>
    public TimeSpan ThrottledTime => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _throttledTicks));

    public ulong Now => _timeBase + (ulong)Stopwatch.GetElapsedTime(_start).Ticks;

    public ulong NextPollIcount => _nextPoll;

    public void Wake()
    {
        _wake = true;
        _wakeSignal.Set();
        _console.Wake();
    }

    public void ClearWake()
    {
        _wake = false;
        _wakeSignal.Reset();
    }

    /// <summary>Cuts a throttle sleep short when the guest is asked to pause (the switchover should not wait for it).</summary>
    private readonly ManualResetEventSlim _wakeSignal = new();

    public void Poll(Machine machine)
    {
        _nextPoll = machine.Icount + PollInterval;
        if (Permit is { Expired: true }) { machine.RequestStop(); return; } // fenced: not one more input or tick
        Log?.OnPoll(machine);
        ulong edge = machine.NextTimerEdge;
        if (edge != ulong.MaxValue)
        {
            ulong now = Now;
            if (now >= edge) DeliverTime(machine, now);
        }
        DeliverSerial(machine);
        long t = Stopwatch.GetTimestamp();
        if (Throttle > 0) ApplyThrottle(machine, t); // sets _lastPollTicks after its sleep
        else _lastPollTicks = t;
        if (t - _lastFlush > Stopwatch.Frequency / 100) { _console.Flush(); _lastFlush = t; }
    }

    private void ApplyThrottle(Machine machine, long now)
    {
        double f = Math.Min(Throttle, 0.99);
        _throttleDebt += (now - _lastPollTicks) * f / (1 - f);
        if (_throttleDebt < Stopwatch.Frequency / 1000.0) { _lastPollTicks = now; return; } // sleep in slices of >= 1 ms
        long before = Stopwatch.GetTimestamp();
        // Time the guest is held back anyway is used to bring the page hashes up to date, so the
        // digest at the switchover has little left to hash (it is downtime).
        machine.Memory.RefreshRamDigest();
        double left = _throttleDebt - (Stopwatch.GetTimestamp() - before);
        if (left > 0) _wakeSignal.Wait(TimeSpan.FromSeconds(left / Stopwatch.Frequency));
        long slept = Stopwatch.GetTimestamp() - before;
        _throttleDebt -= slept;
        if (_throttleDebt < -Stopwatch.Frequency / 100.0) _throttleDebt = 0; // do not bank oversleep
        Interlocked.Add(ref _throttledTicks, slept);
        _lastPollTicks = Stopwatch.GetTimestamp();
    }

    private void DeliverTime(Machine machine, ulong now)
    {
        Log?.TimeDelivered(machine, now);
        machine.DeliverTime(now);
    }

    private void DeliverSerial(Machine machine)
    {
        int room = machine.Uart.RxSpace;
        if (room <= 0) return;
        Span<byte> buffer = stackalloc byte[room];
        int n = _console.Read(buffer);
        if (n == 0) return;
        Log?.SerialInput(machine, buffer[..n]);
        if (machine.DeliverSerialInput(buffer[..n]) != n) throw new InvalidOperationException("UART refused input it had room for");
    }

    /// <summary>Disk requests complete at once; logged while a migration records the inputs.</summary>
    public void BlockRequestsPending(Machine machine)
    {
        int n = machine.BlockRequestsInFlight;
        Log?.BlockCompletion(machine, n);
        machine.CompleteBlockRequests(n);
    }

    public ulong ReadTime(Machine machine)
    {
        ulong t = Now;
        Log?.TimeRead(machine, t);
        return t;
    }

    public bool WaitForInput(Machine machine)
    {
        _console.Flush();
        ulong deadline = machine.TimerDeadline;
        bool timerArmed = deadline != ulong.MaxValue;
        if (!timerArmed && !machine.ExternalInterruptsEnabled) return false;
        while (true)
        {
            if (_wake) return true; // the machine sees its stop request at the top of its loop
            ulong now = Now;
            if (timerArmed && now >= deadline)
            {
                DeliverTime(machine, now);
                return true;
            }
            int before = machine.Uart.RxSpace;
            DeliverSerial(machine); // input may already be queued: the wake-up signal is consumed once
            if (machine.Uart.RxSpace != before) return true;
            int waitMs = timerArmed ? (int)Math.Min((deadline - now) / (Clint.Frequency / 1000) + 1, 1000) : 1000;
            _console.InputArrived.WaitOne(waitMs);
        }
    }

    public ushort ReadEntropy(Machine machine)
    {
        ushort v = (ushort)System.Security.Cryptography.RandomNumberGenerator.GetInt32(0x10000);
        Log?.Entropy(machine, v);
        return v;
    }

    public void SerialOutput(byte value) => _console.Write(value);
}
