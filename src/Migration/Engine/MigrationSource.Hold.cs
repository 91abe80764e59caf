using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// After commit the paused source copy is the guest until the destination says it runs there:
/// `Resumed` on the connection, or (connection lost) an <see cref="ArrivalQuery"/> answered
/// <see cref="ArrivalState.Resumed"/>. Until then it is held under the guest's name; a watcher keeps
/// asking the destination and lets the copy go when it confirms, and the operator has an exit from
/// every state (`lm resolve NAME --host SRC [--decision go|abort]`, `lm stop`).
/// </summary>
internal sealed partial class MigrationSource
{
    /// <summary>How often a held copy asks its destination.</summary>
    private TimeSpan HeldQueryInterval => _host.Options.GoQueryInterval;

    private volatile ArrivalAnswer? _lastArrival;
    private int _holding; // 1 while a held copy exists (post-copy or unconfirmed commit)

    /// <summary>Waits for the destination's word that the guest runs there; false when it did not come in time.</summary>
    private bool AwaitResumeConfirmation(MigrationReport report, Exception? goLost)
    {
        var until = DateTime.UtcNow + ResumedTimeout;
        if (goLost == null)
        {
            try
            {
                var resumed = Expect(Envelope.BodyOneofCase.Resumed, ResumedTimeout, CancellationToken.None).Resumed;
                OnResumed(resumed);
                report.Console = resumed.Console;
                return true;
            }
            catch (Exception e) when (e is IOException or MigrationFailedException)
            {
                _host.Log($"migration {Id}: no Resumed on the connection ({e.Message}); asking {_target} directly");
            }
        }
        // GO may be lost: the destination asks for it (GoQuery) and we ask it whether it runs the guest.
        while (DateTime.UtcNow < until)
        {
            if (QueryArrival() is { State: ArrivalState.ArrivalResumed } answer)
            {
                _tResumed = Now;
                report.Console = answer.Detail;
                return true;
            }
            var left = until - DateTime.UtcNow;
            if (left > TimeSpan.Zero) Thread.Sleep(left < HeldQueryInterval ? left : HeldQueryInterval);
        }
        if (_tResumed < 0) _tResumed = Now;
        return false;
    }

    /// <summary>Asks the destination what became of this migration; null when it cannot be reached.</summary>
    private ArrivalAnswer? QueryArrival()
    {
        try
        {
            using var c = Connection.Connect(_target, TimeSpan.FromSeconds(2));
            c.ClientHandshake(Purpose.Control);
            c.ReceiveTimeout = TimeSpan.FromSeconds(5);
            c.Send(new Envelope { ArrivalQuery = new ArrivalQuery { MigrationId = Id, Name = _command.Name } });
            var reply = c.Receive();
            var answer = reply.BodyCase == Envelope.BodyOneofCase.ArrivalAnswer ? reply.ArrivalAnswer : null;
            _lastArrival = answer;
            return answer;
        }
        catch (Exception e) when (e is IOException or ProtocolException) { return null; }
    }

    /// <summary>Committed, not confirmed: keep the paused copy under the name and watch the destination.</summary>
    private void HoldUnconfirmed(MigrationReport report)
    {
        _phase = MigrationPhase.CommittedUnconfirmed;
        report.Error = $"committed (GO), but {_target} did not confirm that the guest runs there within {ResumedTimeout.TotalSeconds:F0} s; " +
            $"the paused copy is held on {_host.Address} until it does: `lm resolve {_command.Name} --host {_host.Address}` asks again " +
            "(and resumes the guest here if the destination has no copy)";
        _host.Log($"migration {Id}: {report.Error}");
        _conn?.Dispose();
        _host.Ownership.HandedOver(_command.Name, _guest.Machine); // FLEET: a recover after the destination died starts from this state
        StartHolding();
    }

    /// <summary>The held copy is in the host's table; a watcher lets it go once the destination confirms.</summary>
    private void StartHolding()
    {
        if (Interlocked.Exchange(ref _holding, 1) != 0) return;
        _host.Hold(_entry, this);
        new Thread(WatchDestination) { IsBackground = true, Name = $"held-{Id}" }.Start();
    }

    private void WatchDestination()
    {
        while (!_host.ShuttingDown.IsCancellationRequested && Volatile.Read(ref _holding) == 1)
        {
            _host.ShuttingDown.WaitHandle.WaitOne(HeldQueryInterval);
            if (Volatile.Read(ref _resuming) == 1) continue; // a resume in progress settles it
            if (QueryArrival() is not { State: ArrivalState.ArrivalResumed }) continue;
            if (Interlocked.CompareExchange(ref _resuming, 1, 0) != 0) continue;
            try
            {
                if (Interlocked.Exchange(ref _holding, 0) == 1)
                    ReleaseCopy($"{_target} confirmed that '{_command.Name}' runs there with all its pages; the held copy is released");
            }
            finally { Volatile.Write(ref _resuming, 0); }
        }
    }

    /// <summary>What status shows for a held copy: the state and the exits that work from it.</summary>
    public string HeldStatus
    {
        get
        {
            string exits = _lastArrival?.State == ArrivalState.ArrivalUnknown
                ? $"{_target} has no copy of it: `lm resolve {_command.Name} --host {_host.Address}` resumes it here, `lm stop` discards it"
                : _manifest != null
                    ? $"`lm migrate {_command.Name} --from {_host.Address} --resume` recovers it; `lm resolve {_command.Name} --host {_host.Address} --decision abort` resumes it here if {_target} is gone for good"
                    : $"`lm resolve {_command.Name} --host {_host.Address}` asks {_target} again; --decision abort resumes it here, go lets this copy go";
            return $"{Strategies.Name(_phase)}: the paused copy is held here; {exits}";
        }
    }

    /// <summary>
    /// `lm resolve NAME --host SRC`: "" asks the destination (it runs the guest: release; it has no
    /// copy: resume here); "abort" resumes the held copy here (journaled, so a destination that asks
    /// later discards); "go" lets the copy go (the operator knows the destination runs it).
    /// </summary>
    public string ResolveHeld(Decision decision)
    {
        if (Interlocked.CompareExchange(ref _resuming, 1, 0) != 0) throw new HostException($"a resume of '{_command.Name}' is in progress");
        try
        {
            if (Volatile.Read(ref _holding) == 0) return "already settled";
            switch (decision)
            {
                case Decision.Go:
                    Interlocked.Exchange(ref _holding, 0);
                    ReleaseCopy($"the operator let the held copy of '{_command.Name}' go");
                    return $"released the copy of '{_command.Name}' held here; it runs on {_target}";
                case Decision.Abort:
                    ResumeHere("the operator's resolve");
                    return $"'{_command.Name}' runs here again (operator's decision)";
                case Decision.Pending:
                    var answer = QueryArrival() ?? throw new HostException(
                        $"the destination {_target} is unreachable; decide with --decision abort (resume the paused copy here, only if {_target} is gone for good) or go (let it go, only if {_target} runs it)");
                    switch (answer.State)
                    {
                        case ArrivalState.ArrivalResumed:
                            Interlocked.Exchange(ref _holding, 0);
                            ReleaseCopy($"{_target} runs '{_command.Name}'; the held copy is released");
                            return $"'{_command.Name}' runs on {_target}; released the copy held here";
                        case ArrivalState.ArrivalUnknown:
                            ResumeHere($"{_target} has no copy of it ({answer.Detail})");
                            return $"'{_command.Name}' runs here again: {_target} has no copy of it";
                        default:
                            throw new HostException($"{_target} says the guest is {answer.Detail}; try again later{(_manifest != null ? " or resume the post-copy with --resume" : "")}");
                    }
                default:
                    throw new HostException($"decision {decision} does not apply to a held copy (expected go or abort)");
            }
        }
        finally { Volatile.Write(ref _resuming, 0); }
    }

    /// <summary>The held copy becomes the running guest again; a destination asking later is told abort.</summary>
    private void ResumeHere(string why)
    {
        Interlocked.Exchange(ref _holding, 0);
        _host.RecordOutcome(Id, new Outcome(Decision.Abort, [], []));
        _conn?.Dispose();
        ReleaseFallbackState();
        _guest.Port.Throttle = 0;
        ReopenConsole();
        _host.Reinstate(_entry, this, _guest);
        _phase = MigrationPhase.RolledBack;
        _guest.Resume();
        _host.Log($"migration {Id}: '{_command.Name}' resumed here from its held copy ({why})");
    }

    /// <summary>`lm stop` on the source of a held copy: the operator gives up on it.</summary>
    public void DiscardHeldCopy()
    {
        if (Interlocked.Exchange(ref _resuming, 1) != 0) throw new HostException($"a resume of '{_command.Name}' is in progress");
        Interlocked.Exchange(ref _holding, 0);
        _phase = MigrationPhase.Abandoned;
        _host.ReleaseHold(_entry, this);
        _guest.Dispose();
        _host.Log($"migration {Id}: the held copy of '{_command.Name}' was discarded; the destination can no longer fetch pages from it");
    }
}
