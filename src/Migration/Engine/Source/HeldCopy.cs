using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// After commit the paused source copy is the guest until the destination says it runs there:
/// `Resumed` on the connection, or (connection lost) an <see cref="ArrivalQuery"/> answered
/// <see cref="ArrivalState.ArrivalResumed"/>. Until then it is held under the guest's name; a watcher keeps
/// asking the destination and lets the copy go when it confirms, and the operator has an exit from
/// every state (`lm resolve NAME --host SRC [--decision go|abort]`, `lm stop`).
/// </summary>
internal sealed class HeldCopy(SourceContext ctx, SourceSwitchover switchover)
{
    private volatile ArrivalAnswer? _lastArrival;
    private int _holding; // 1 while a held copy exists (post-copy or unconfirmed commit)
    private int _resuming; // 1 while a resume or resolve settles it

    /// <summary>Set when the held copy holds post-copy pages (what `--resume` sends).</summary>
    public PostcopySource? Postcopy { get; set; }
    private string Name => ctx.Command.Name;
    private string Here => ctx.Host.Address;

    /// <summary>Asks the destination what became of this migration; null when it cannot be reached.</summary>
    public ArrivalAnswer? QueryArrival()
    {
        try
        {
            using var c = Connection.Connect(ctx.Target, TimeSpan.FromSeconds(2));
            c.ClientHandshake(Purpose.Control);
            c.ReceiveTimeout = TimeSpan.FromSeconds(5);
            c.Send(new Envelope { ArrivalQuery = new ArrivalQuery { MigrationId = ctx.Id, Name = Name } });
            var reply = c.Receive();
            var answer = reply.BodyCase == Envelope.BodyOneofCase.ArrivalAnswer ? reply.ArrivalAnswer : null;
            _lastArrival = answer;
            return answer;
        }
        catch (Exception e) when (e is IOException or ProtocolException) { return null; }
    }

    /// <summary>Committed, not confirmed: keep the paused copy under the name and watch the destination.</summary>
    public void HoldUnconfirmed(MigrationReport report)
    {
        ctx.Phase = MigrationPhase.CommittedUnconfirmed;
        report.Error = $"committed (GO), but {ctx.Target} did not confirm that the guest runs there within {ctx.Host.Options.ResumeConfirmTimeout.TotalSeconds:F0} s; " +
            $"the paused copy is held on {Here} until it does: `lm resolve {Name} --host {Here}` asks again " +
            "(and resumes the guest here if the destination has no copy)";
        ctx.Log(report.Error);
        ctx.Conn?.Dispose();
        Start();
    }

    /// <summary>The held copy is in the host's table; a watcher lets it go once the destination confirms.</summary>
    public void Start()
    {
        if (Interlocked.Exchange(ref _holding, 1) != 0) return;
        ctx.Host.Hold(ctx.Entry, ctx.Owner);
        new Thread(WatchDestination) { IsBackground = true, Name = $"held-{ctx.Id}" }.Start();
    }

    /// <summary>Ends the hold (true when it was held): the caller releases or resumes the copy.</summary>
    public bool Stop() => Interlocked.Exchange(ref _holding, 0) == 1;

    /// <summary>Takes the right to settle the copy (a resume, a resolve); false while another one does.</summary>
    public bool TryBeginResume() => Interlocked.CompareExchange(ref _resuming, 1, 0) == 0;
    public void EndResume() => Volatile.Write(ref _resuming, 0);

    private void WatchDestination()
    {
        var interval = ctx.Host.Options.GoQueryInterval;
        while (!ctx.Host.ShuttingDown.IsCancellationRequested && Volatile.Read(ref _holding) == 1)
        {
            ctx.Host.ShuttingDown.WaitHandle.WaitOne(interval);
            if (Volatile.Read(ref _resuming) == 1) continue; // a resume in progress settles it
            if (QueryArrival() is not { State: ArrivalState.ArrivalResumed }) continue;
            if (!TryBeginResume()) continue;
            try
            {
                if (Stop()) switchover.ReleaseCopy($"{ctx.Target} confirmed that '{Name}' runs there with all its pages; the held copy is released");
            }
            finally { EndResume(); }
        }
    }

    /// <summary>What status shows for a held copy: the state and the exits that work from it.</summary>
    public string Status
    {
        get
        {
            string exits = _lastArrival?.State == ArrivalState.ArrivalUnknown
                ? $"{ctx.Target} has no copy of it: `lm resolve {Name} --host {Here}` resumes it here, `lm stop` discards it"
                : Postcopy != null
                    ? $"`lm migrate {Name} --from {Here} --resume` recovers it; `lm resolve {Name} --host {Here} --decision abort` resumes it here if {ctx.Target} is gone for good"
                    : $"`lm resolve {Name} --host {Here}` asks {ctx.Target} again; --decision abort resumes it here, go lets this copy go";
            return $"{Strategies.Name(ctx.Phase)}: the paused copy is held here; {exits}";
        }
    }

    /// <summary>
    /// `lm resolve NAME --host SRC`: pending asks the destination (it runs the guest: release; it has no
    /// copy: resume here); abort resumes the held copy here (journaled, so a destination that asks
    /// later discards); go lets the copy go (the operator knows the destination runs it).
    /// </summary>
    public string Resolve(Decision decision)
    {
        if (!TryBeginResume()) throw new HostException($"a resume of '{Name}' is in progress");
        try
        {
            if (Volatile.Read(ref _holding) == 0) return "already settled";
            switch (decision)
            {
                case Decision.Go:
                    Stop();
                    switchover.ReleaseCopy($"the operator let the held copy of '{Name}' go");
                    return $"released the copy of '{Name}' held here; it runs on {ctx.Target}";
                case Decision.Abort:
                    Stop();
                    switchover.ResumeHere("the operator's resolve");
                    return $"'{Name}' runs here again (operator's decision)";
                case Decision.Pending:
                    var answer = QueryArrival() ?? throw new HostException(
                        $"the destination {ctx.Target} is unreachable; decide with --decision abort (resume the paused copy here, only if {ctx.Target} is gone for good) or go (let it go, only if {ctx.Target} runs it)");
                    switch (answer.State)
                    {
                        case ArrivalState.ArrivalResumed:
                            Stop();
                            switchover.ReleaseCopy($"{ctx.Target} runs '{Name}'; the held copy is released");
                            return $"'{Name}' runs on {ctx.Target}; released the copy held here";
                        case ArrivalState.ArrivalUnknown:
                            Stop();
                            switchover.ResumeHere($"{ctx.Target} has no copy of it ({answer.Detail})");
                            return $"'{Name}' runs here again: {ctx.Target} has no copy of it";
                        default:
                            throw new HostException($"{ctx.Target} says the guest is {answer.Detail}; try again later{(Postcopy != null ? " or resume the post-copy with --resume" : "")}");
                    }
                default:
                    throw new HostException($"decision {decision} does not apply to a held copy (expected go or abort)");
            }
        }
        finally { EndResume(); }
    }

    /// <summary>`lm stop` on the source of a held copy: the operator gives up on it.</summary>
    public void Discard()
    {
        if (Interlocked.Exchange(ref _resuming, 1) != 0) throw new HostException($"a resume of '{Name}' is in progress");
        Stop();
        ctx.Phase = MigrationPhase.Abandoned;
        ctx.Host.ReleaseHold(ctx.Entry, ctx.Owner);
        ctx.Guest.Dispose();
        ctx.Log($"the held copy of '{Name}' was discarded; the destination can no longer fetch pages from it");
    }
}
