using LiveMigration.Guest;
using LiveMigration.Trace;

namespace LiveMigration.Replayer;

/// <summary>
/// Feeds a trace back into a machine: each logged input at its icount, logged values for time and
/// entropy reads (checking that the guest reads at the logged icount), every state digest compared.
/// At WFI the next input is delivered at once, so idle time costs nothing. The first mismatch is
/// kept in <see cref="Divergence"/> and the machine is asked to stop.
/// </summary>
public sealed class ReplayHostPort : IHostPort
{
    private const int KeptEvents = 16;
    private readonly EventQueue _events;
    private readonly bool _verify;
    private readonly Action<byte>? _output;
    private readonly TraceEvent[] _last = new TraceEvent[KeptEvents];
    private long _applied;

    internal ReplayHostPort(EventQueue events, bool verify, Action<byte>? output)
    {
        _events = events;
        _verify = verify;
        _output = output;
    }

    public Divergence? Divergence { get; private set; }
    /// <summary>The trace's end event, once the machine reached its icount.</summary>
    public TraceEvent? End { get; private set; }
    public long EventsApplied => _applied;
    public long DigestsVerified { get; private set; }
    /// <summary>Set when the machine stopped because no further event has arrived yet.</summary>
    public bool Starved { get; private set; }

    public ulong NextPollIcount
    {
        get
        {
            if (_events.TryPeek(out var e)) return e.Icount;
            return _events.InputComplete ? ulong.MaxValue : _events.Horizon;
        }
    }

    public void Poll(Machine machine)
    {
        ulong icount = machine.Icount;
        while (Divergence == null && End == null && _events.TryPeek(out var e))
        {
            if (e.Icount < icount) { Diverge(machine, $"the guest ran past the trace's event '{e}'"); return; }
            if (e.Icount > icount) return;
            if (e.Kind == EventKind.End) { End = e; return; }
            if (!e.IsBetweenInstructions) return; // a read the next instruction makes
            Apply(machine, e);
        }
    }

    private void Apply(Machine machine, in TraceEvent e)
    {
        switch (e.Kind)
        {
            case EventKind.TimeDelivered:
                machine.DeliverTime(e.Value);
                break;
            case EventKind.SerialInput:
                if (machine.DeliverSerialInput(e.Data.Span) != e.Data.Length)
                {
                    Diverge(machine, $"the UART had room for only {machine.Uart.RxSpace} of the {e.Data.Length} logged input bytes");
                    return;
                }
                break;
            case EventKind.BlockCompletion:
                if (e.Value > (ulong)machine.BlockRequestsInFlight)
                {
                    Diverge(machine, $"the trace completes {e.Value} disk requests; {machine.BlockRequestsInFlight} are in flight");
                    return;
                }
                machine.CompleteBlockRequests((int)e.Value);
                break;
            case EventKind.StateDigest:
                if (_verify)
                {
                    ulong actual = machine.ComputeDigest();
                    if (actual != e.Value)
                    {
                        Consumed(e);
                        Divergence = new Divergence(e.Icount, "state digest mismatch", e.Value, actual, LastEvents());
                        machine.RequestStop();
                        return;
                    }
                    DigestsVerified++;
                }
                break;
        }
        Consumed(e);
    }

    private void Consumed(in TraceEvent e)
    {
        _last[_applied % KeptEvents] = e;
        _applied++;
        _events.Advance();
    }

    public ulong ReadTime(Machine machine)
    {
        if (Expect(machine, EventKind.TimeRead, out var e)) return e.Value;
        return machine.Clint.Time;
    }

    public ushort ReadEntropy(Machine machine)
    {
        if (Expect(machine, EventKind.Entropy, out var e)) return (ushort)e.Value;
        return 0;
    }

    private bool Expect(Machine machine, EventKind kind, out TraceEvent e)
    {
        if (Divergence != null) { e = default; return false; }
        if (_events.TryPeek(out e) && e.Kind == kind && e.Icount == machine.Icount)
        {
            Consumed(e);
            return true;
        }
        string what = kind == EventKind.TimeRead ? "read the time" : "read entropy";
        Diverge(machine, _events.TryPeek(out var next)
            ? $"the guest {what} at icount {machine.Icount}; the trace's next event is '{next}'"
            : $"the guest {what} at icount {machine.Icount}; the trace has no further event");
        return false;
    }

    public bool WaitForInput(Machine machine)
    {
        if (Divergence != null) return false;
        ulong icount = machine.Icount;
        if (!_events.TryPeek(out var e))
        {
            // Inputs below the horizon have all arrived: sleeping there with none left is a divergence.
            if (!_events.InputComplete && icount < _events.Horizon)
                Diverge(machine, $"the guest sleeps in WFI at icount {icount}; the trace has no input for it");
            else Starved = true;
            return false;
        }
        if (e.Icount == icount && e.Kind == EventKind.End) { End = e; return false; }
        if (e.Icount == icount && e.IsBetweenInstructions)
        {
            Poll(machine);
            return Divergence == null;
        }
        Diverge(machine, $"the guest sleeps in WFI at icount {icount}; the trace's next event is '{e}'");
        return false;
    }

    /// <summary>Disk requests complete only where the trace says (its block-completion events).</summary>
    public void BlockRequestsPending(Machine machine) { }

    public void SerialOutput(byte value) => _output?.Invoke(value);

    internal void ClearStarved() => Starved = false;

    internal void Diverge(Machine machine, string reason)
    {
        Divergence ??= new Divergence(machine.Icount, reason, null, null, LastEvents());
        machine.RequestStop();
    }

    /// <summary>The last events applied, oldest first.</summary>
    public IReadOnlyList<TraceEvent> LastEvents()
    {
        int n = (int)Math.Min(_applied, KeptEvents);
        var list = new List<TraceEvent>(n);
        for (long i = _applied - n; i < _applied; i++) list.Add(_last[i % KeptEvents]);
        return list;
    }
}
