using System.Diagnostics;
using LiveMigration.Guest;
using LiveMigration.Recorder;

namespace LiveMigration.Migration.Hosting;

/// <summary>
/// The live host port of a hosted guest: host clock at 10 MHz, console input, entropy. Beyond a
/// plain live port it can be woken from WFI (so a pause is prompt even for a guest waiting on
/// input), logs its inputs while a migration records them (<see cref="Log"/>), stops the guest
/// when the host's run permit expires, and can throttle the guest (auto-converge).
/// </summary>
public sealed class GuestHostPort(ConsoleEndpoint console, ulong timeBase = 0) : LiveHostPort(console, timeBase)
{
    private volatile bool _wake;
    private long _lastPollTicks = Stopwatch.GetTimestamp();
    private double _throttleDebt;
    private long _throttledTicks;

    public ConsoleEndpoint Console => (ConsoleEndpoint)Serial;

    /// <summary>A new console for a paused guest (a migration that closed the old one rolled back).</summary>
    public void ReplaceConsole(ConsoleEndpoint console) => ReplaceSerial(console);

    public override void Rebase(ulong timeBase)
    {
        base.Rebase(timeBase);
        _lastPollTicks = Stopwatch.GetTimestamp();
    }

    /// <summary>Set while a migration records this guest's inputs; swapped only while the guest is paused.</summary>
    public IInputLog? Log { get; set; }

    /// <summary>The host's run permit (fleet fencing); null: no limit.</summary>
    public RunPermit? Permit { get; set; }

    /// <summary>Fraction of wall time the guest is held back (0 = full speed, 0.9 = runs 10 % of the time).</summary>
    public double Throttle { get; set; }

    /// <summary>Wall time spent throttled so far.</summary>
    public TimeSpan ThrottledTime => Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _throttledTicks));

    public void Wake()
    {
        _wake = true;
        _wakeSignal.Set();
        Console.Wake();
    }

    public void ClearWake()
    {
        _wake = false;
        _wakeSignal.Reset();
    }

    protected override bool WakeRequested => _wake;

    /// <summary>Cuts a throttle sleep short when the guest is asked to pause (the switchover should not wait for it).</summary>
    private readonly ManualResetEventSlim _wakeSignal = new();

    public override void Poll(Machine machine)
    {
        if (Permit is { Expired: true }) // fenced: not one more input or tick
        {
            SkipPoll(machine);
            machine.RequestStop();
            return;
        }
        Log?.OnPoll(machine);
        base.Poll(machine);
        long t = Stopwatch.GetTimestamp();
        if (Throttle > 0) ApplyThrottle(machine, t); // sets _lastPollTicks after its sleep
        else _lastPollTicks = t;
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

    protected override void DeliverTime(Machine machine, ulong now)
    {
        Log?.TimeDelivered(machine, now);
        base.DeliverTime(machine, now);
    }

    protected override void DeliverSerialInput(Machine machine, ReadOnlySpan<byte> data)
    {
        Log?.SerialInput(machine, data);
        base.DeliverSerialInput(machine, data);
    }

    protected override void CompleteBlockRequests(Machine machine, int count)
    {
        Log?.BlockCompletion(machine, count);
        base.CompleteBlockRequests(machine, count);
    }

    public override ulong ReadTime(Machine machine)
    {
        ulong t = base.ReadTime(machine);
        Log?.TimeRead(machine, t);
        return t;
    }

    public override ushort ReadEntropy(Machine machine)
    {
        ushort v = base.ReadEntropy(machine);
        Log?.Entropy(machine, v);
        return v;
    }
}
