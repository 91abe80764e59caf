using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Transport;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Google.Protobuf;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The switchover every strategy ends in, source side: pause (only toward a live peer that has
/// taken what was sent) → final state → the destination verifies and ACKs → the commit step
/// (<see cref="ISwitchoverCommit"/>) → GO → release once the destination confirms it runs the
/// guest; or, before commit, roll back and resume here. Commit and rollback exclude each other by
/// construction (<see cref="SwitchoverDecision"/>). After commit without confirmation the paused
/// copy is held (<see cref="HeldCopy"/>).
/// </summary>
internal sealed class SourceSwitchover
{
    private readonly SourceContext _ctx;
    private readonly SwitchoverDecision _decision = new();
    private readonly ISwitchoverCommit _commit;
    private readonly CancellationTokenSource _cancel = new();
    private readonly ManualResetEventSlim _consoleClosed = new();
    private (byte[] Input, byte[] Backlog)? _consoleHandoff;
    private Go? _pendingGo;
    private volatile bool _goSent;
    private volatile Exception? _goFailure;
    private Resumed? _resumed;
    private volatile string? _refusal;

    public SourceSwitchover(SourceContext ctx, ISwitchoverCommit commit)
    {
        _ctx = ctx;
        _commit = commit;
        Held = new HeldCopy(ctx, this);
    }

    /// <summary>Set once the strategy is known: what a release or a rollback lets go of.</summary>
    public ISourceStrategy? Strategy { get; set; }
    public HeldCopy Held { get; }
    public CancellationToken Token => _cancel.Token;
    public bool Committed => _decision.Value == Decision.Go;
    /// <summary>The destination's Resumed (its clock stamp gives the exact downtime), or null.</summary>
    public Resumed? ResumedMessage => _resumed;

    /// <summary>Cancels unless the migration has committed; returns false when it is too late.</summary>
    public bool Cancel()
    {
        if (!_decision.TakeAbort()) return false;
        _cancel.Cancel();
        return true;
    }

    /// <summary>True when abort is the outcome (so the caller rolls back); false when the commit won.</summary>
    public bool TryAbort() => _decision.TakeAbort();

    /// <summary>
    /// Every strategy's pause: only toward a peer heard from lately that has taken what was sent (log
    /// shipping's replay progress already proves that: <paramref name="proven"/>), and only once the
    /// commit step says a commit can succeed. While its store cannot say (an etcd leader election),
    /// the guest runs on, <paramref name="meanwhile"/> keeps the destination close, and it asks again
    /// for up to <see cref="HostOptions.PauseCheckBudget"/>.
    /// </summary>
    public void Pause(bool proven = false, Action? meanwhile = null)
    {
        var token = _cancel.Token;
        long start = Stopwatch.GetTimestamp();
        bool told = false; // once: an unanswered store is asked again many times
        while (true)
        {
            _ctx.Peer.WaitCaughtUp(proven ? 0 : _ctx.Conn!.SentTotal, token);
            var check = _commit.BeforePause(Record(null));
            if (check.Verdict == PauseVerdict.Go) break;
            if (check.Verdict == PauseVerdict.Doomed) throw new MigrationFailedException($"not paused: {check.Why}");
            var waited = Stopwatch.GetElapsedTime(start);
            if (waited > _ctx.Host.Options.PauseCheckBudget)
                throw new MigrationFailedException($"not paused: {check.Why} (asked for {waited.TotalSeconds:F1} s while the guest ran on)");
            if (!told)
            {
                told = true;
                _ctx.Log($"not pausing yet: {check.Why}; the guest runs on and the source asks again for up to {_ctx.Host.Options.PauseCheckBudget.TotalSeconds:F0} s");
            }
            if (meanwhile != null) meanwhile();
            else token.WaitHandle.WaitOne(100);
        }
        _ctx.Guest.Pause();
        _ctx.Times.Pause = _ctx.Now;
        _ctx.Times.PauseTimestamp = Stopwatch.GetTimestamp();
    }

    /// <summary>The final state of the paused guest, with the digest the destination must reach.</summary>
    public FinalState FinalStateOf(ulong digest, byte[] deviceState)
    {
        var machine = _ctx.Guest.Machine;
        return new FinalState
        {
            Icount = machine.Icount, DeviceState = ByteString.CopyFrom(deviceState), Digest = digest,
            Mtime = Math.Max(_ctx.Guest.Port.Now, machine.Clint.Time), Exited = machine.ExitCode != null,
        };
    }

    /// <summary>Sends the final state of the paused guest (RAM is already there): the destination verifies <paramref name="digest"/>.</summary>
    public void SendFinalState(CancellationToken token, ulong digest)
    {
        _ctx.Phase = MigrationPhase.Switchover;
        _ctx.Fault(FaultPoint.BeforeAck); // paused, the final state not yet sent: the destination cannot ACK
        _ctx.Conn!.Send(new Envelope { FinalState = FinalStateOf(digest, _ctx.Guest.Machine.SaveDeviceState()) }, ByteCategory.State, token);
    }

    /// <summary>After the final state: waits for the matching ACK and commits (the reader thread usually commits first).</summary>
    public void AwaitAckAndCommit(SwitchoverPoint point, CancellationToken token)
    {
        _ctx.Phase = MigrationPhase.AwaitingAck;
        double tFinal = _ctx.Now;
        CloseConsoleEarly();
        _ctx.Fault(FaultPoint.AfterFinalState);
        // The matching ACK commits and sends GO on the thread that reads it: no hand-off in the downtime.
        _ctx.ReturnPath.OnAck = ack => ack.Digest == point.Digest && ack.Icount == point.Icount && CommitAndSendGo(point);
        Ack ack;
        try { ack = _ctx.ReturnPath.Expect(Envelope.BodyOneofCase.Ack, _ctx.Host.Options.AckTimeout, token).Ack; }
        finally { _ctx.ReturnPath.OnAck = null; }
        if (ack.Digest != point.Digest || ack.Icount != point.Icount)
            throw new MigrationFailedException($"destination verified icount {ack.Icount} digest {ack.Digest:x16}, source has {point.Icount} {point.Digest:x16}");
        if (!Committed && Commit(point)) // the ACK came before the reader was armed (an abort that won: this throws)
        {
            _ctx.Fault(FaultPoint.AfterAck);
            SendGo(); // at once, as the reader does: GO is downtime, the bookkeeping is not
            RecordMove();
        }
        // GO is stamped only when the reader sent it; otherwise FinishAfterCommit sends it next.
        string go = _ctx.Times.Go > _ctx.Times.Pause ? $"ACK and GO {(_ctx.Times.Go - _ctx.Times.Pause) * 1000:F2} ms after it" : $"ACK {(_ctx.Now - _ctx.Times.Pause) * 1000:F2} ms after it, GO next";
        _ctx.Log($"switchover: final state sent {(tFinal - _ctx.Times.Pause) * 1000:F2} ms after the pause, {go}");
    }

    /// <summary>The point of no return: from here the guest belongs to the destination. Throws when it is not (abort, refusal).</summary>
    /// <returns>True when this call ran the commit step; false when another thread had committed.</returns>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    private bool Commit(SwitchoverPoint point)
    {
        _ctx.Fault(FaultPoint.BeforeCommit);
        bool go = _decision.TryCommit(() =>
        {
            var (input, backlog) = _consoleClosed.Wait(TimeSpan.FromSeconds(5)) && _consoleHandoff is { } h ? h : _ctx.Guest.Console.Close();
            _refusal = _commit.Commit(Record(point) with { ConsoleInput = input, ConsoleBacklog = backlog });
            if (_refusal != null) return false;
            _pendingGo = new Go { ConsoleInput = ByteString.CopyFrom(input), ConsoleBacklog = ByteString.CopyFrom(backlog) };
            return true;
        }, out bool ran);
        // Whichever thread ran the refused step (the reader, usually), both report its reason.
        if (!go && _refusal is { } refused) throw new MigrationFailedException($"the commit was refused: {refused}");
        if (!go) throw new OperationCanceledException("the migration was already decided: abort");
        return ran;
    }

    private SwitchoverRecord Record(SwitchoverPoint? point) =>
        new(_ctx.Id, _ctx.Command.Name, _ctx.Host.Address, _ctx.Target, point?.Icount ?? 0, point?.Digest ?? 0)
        {
            Epoch = _ctx.Epoch,
            DestinationHost = _ctx.Conn?.Peer is { Authenticated: true } peer ? peer.Name : null,
        };

    /// <summary>On the return-path reader, for the ACK that matches: commit, then GO at once.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    private bool CommitAndSendGo(SwitchoverPoint point)
    {
        try { if (!Commit(point)) return true; } // the main thread committed (and sends GO)
        catch (Exception e) when (e is OperationCanceledException or MigrationFailedException) { return false; } // aborted or refused: the main thread rolls back
        _ctx.Fault(FaultPoint.AfterAck);
        SendGo();
        RecordMove();
        return true;
    }

    /// <summary>GO right after the commit; a failure is kept for <see cref="FinishAfterCommit"/> (the destination may ask for it).</summary>
    private void SendGo()
    {
        try
        {
            _ctx.Conn!.Send(new Envelope { Go = _pendingGo });
            _goSent = true;
        }
        catch (IOException e) { _goFailure = e; }
        _ctx.Times.Go = _ctx.Now;
    }

    /// <summary>The bookkeeping of a commit, done once GO is on its way (it is not downtime).</summary>
    private void RecordMove()
    {
        var entry = _ctx.Entry;
        lock (_ctx.Host.Lock)
        {
            if (entry.Instance == null && entry.MovedTo == _ctx.Command.Target) return;
            entry.Instance = null;
            entry.MovedTo = _ctx.Command.Target;
        }
        _ctx.Log($"committed at icount {_ctx.Guest.Machine.Icount}");
    }

    /// <summary>
    /// Right after the final state, while the destination verifies it: the guest is paused, so
    /// nothing takes console input any more; closing the console now (draining what its client
    /// sent) keeps that work out of the ACK -> GO path. A rollback reopens it with the same bytes.
    /// </summary>
    private void CloseConsoleEarly()
    {
        _consoleHandoff = _ctx.Guest.Console.Close();
        _consoleClosed.Set();
    }

    /// <summary>A rolled-back migration gives the guest a console again, with the input it had not read.</summary>
    private void ReopenConsole()
    {
        if (_consoleHandoff is not { } h) return;
        _consoleHandoff = null;
        var host = _ctx.Host;
        var console = host.CreateConsole();
        console.Prepend(h.Input);
        console.AddBacklog(h.Backlog);
        var old = _ctx.Guest.Console;
        _ctx.Guest.Port.ReplaceConsole(console);
        old.Dispose();
        _ctx.Log($"'{_ctx.Command.Name}' has a new console at {host.ConsoleAddress(console)}");
    }

    /// <summary>After commit: GO (unless the reader sent it), then the strategy's after-GO work or the wait for Resumed.</summary>
    public void FinishAfterCommit(MigrationReport report, SwitchoverPoint point)
    {
        _ctx.Phase = MigrationPhase.Go;
        Exception? goLost = _goFailure;
        if (goLost == null && !_goSent)
        {
            try { _ctx.Conn!.Send(new Envelope { Go = _pendingGo }); _ctx.Times.Go = _ctx.Now; }
            catch (IOException e) { goLost = e; }
        }
        if (point.Postcopy is { } postcopy)
        {
            // Post-copy: the destination learns GO by asking again, then needs every page we hold.
            if (goLost == null) postcopy.Serve(report);
            else postcopy.HoldForResume(report, null, goLost);
            return;
        }
        // Success only once the destination said the guest runs there; until then this paused copy is the guest.
        if (AwaitResumeConfirmation(report, goLost))
        {
            report.Success = true;
            ReleaseCopy($"'{_ctx.Command.Name}' now runs on {_ctx.Target}");
            return;
        }
        report.Success = false;
        _commit.HandedOver(Record(point), _ctx.Guest.Machine); // a recover after the destination died starts from this state
        Held.HoldUnconfirmed(report);
    }

    public void OnResumed(Resumed resumed)
    {
        _ctx.Times.Resumed = _ctx.Now;
        _resumed = resumed;
    }

    /// <summary>Waits for the destination's word that the guest runs there; false when it did not come in time.</summary>
    private bool AwaitResumeConfirmation(MigrationReport report, Exception? goLost)
    {
        var timeout = _ctx.Host.Options.ResumeConfirmTimeout;
        var until = DateTime.UtcNow + timeout;
        if (goLost == null)
        {
            try
            {
                var resumed = _ctx.ReturnPath.Expect(Envelope.BodyOneofCase.Resumed, timeout, CancellationToken.None).Resumed;
                OnResumed(resumed);
                report.Console = resumed.Console;
                return true;
            }
            catch (Exception e) when (e is IOException or MigrationFailedException)
            {
                _ctx.Log($"no Resumed on the connection ({e.Message}); asking {_ctx.Target} directly");
            }
        }
        // GO may be lost: the destination asks for it (GoQuery) and we ask it whether it runs the guest.
        var interval = _ctx.Host.Options.GoQueryInterval;
        while (DateTime.UtcNow < until)
        {
            if (Held.QueryArrival() is { State: ArrivalState.ArrivalResumed } answer)
            {
                _ctx.Times.Resumed = _ctx.Now;
                report.Console = answer.Detail;
                return true;
            }
            var left = until - DateTime.UtcNow;
            if (left > TimeSpan.Zero) Thread.Sleep(left < interval ? left : interval);
        }
        if (_ctx.Times.Resumed < 0) _ctx.Times.Resumed = _ctx.Now;
        return false;
    }

    /// <summary>Lets the paused source copy go (the destination runs the guest).</summary>
    public void ReleaseCopy(string why)
    {
        _ctx.Phase = MigrationPhase.Done;
        _ctx.Conn?.Dispose();
        _ctx.Host.ReleaseHold(_ctx.Entry, _ctx.Owner);
        Strategy?.Release(); // after the resume, not in the downtime: freeing C0's preserved pages takes a while
        _commit.HandedOver(Record(null), _ctx.Guest.Machine); // the final state becomes the new owner's checkpoint
        _ctx.Guest.Dispose();
        _ctx.Log(why);
    }

    /// <summary>True while a rollback waits for the store to say who owns the guest (the host keeps it as migrating meanwhile).</summary>
    public bool Unsettled => _ctx.Phase == MigrationPhase.Unsettled;

    /// <summary>
    /// Before commit: the destination is told, the guest runs on here with its console. Returns what
    /// the report says: <paramref name="why"/>, or, when the store did not answer, the paused state
    /// and its exits (the host then keeps asking and settles the guest by itself).
    /// </summary>
    public string RollBack(string why)
    {
        _ctx.Phase = MigrationPhase.RolledBack;
        // Once paused a commit may have been tried: first make sure none can still apply; only then
        // is the destination told to discard and the guest resumed here.
        if (_ctx.Times.Pause < 0) { ResumeAfterRollBack(why); return why; }
        string? lost;
        try { lost = _commit.Reclaim(Record(null)); }
        catch (OwnershipUnsettledException e)
        {
            _ctx.Phase = MigrationPhase.Unsettled;
            string name = _ctx.Command.Name, here = _ctx.Host.Address;
            string error = $"{why}; then {e.Message} to the rollback, so '{name}' stays paused on {here} (it runs nowhere): it resumes by itself once etcd answers " +
                $"and its record still names {here}; if {here} cannot reach etcd again, `lm recover {name} --to HOST --etcd URL` restarts it elsewhere from its checkpoint; `lm stop {name} --host {here}` discards it";
            _ctx.Log(error);
            new Thread(() => SettleLater(why)) { IsBackground = true, Name = $"settle-{_ctx.Id}" }.Start();
            return error;
        }
        if (lost != null) { Drop($"failed ({why}); {lost}: dropped here"); return why; }
        ResumeAfterRollBack(why);
        return why;
    }

    /// <summary>The rollback's record read failed: asks again until the store answers, then finishes the rollback as it would have.</summary>
    private void SettleLater(string why)
    {
        var host = _ctx.Host;
        string? lost = null;
        while (true)
        {
            if (host.ShuttingDown.WaitHandle.WaitOne(200)) return; // the host goes: its guest never ran again
            try { lost = _commit.Reclaim(Record(null)); break; }
            catch (OwnershipUnsettledException) { }
        }
        lock (_settle)
        {
            if (_discarded)
            {
                // `lm stop` took the copy meanwhile: the epoch has moved past any commit, so its record can go.
                if (lost != null) _ctx.Log($"'{_ctx.Command.Name}' (discarded here by lm stop) settled after etcd answered: {lost}");
                else
                {
                    host.Ownership.Forget(_ctx.Command.Name, host.Address);
                    _ctx.Log($"'{_ctx.Command.Name}' (discarded here by lm stop) settled after etcd answered: its record is removed; it runs nowhere");
                }
                return;
            }
            _ctx.Phase = MigrationPhase.RolledBack;
            if (lost != null) Drop($"settled after etcd answered: {lost}; dropped here (it never ran again on this host)");
            else ResumeAfterRollBack($"{why}; settled after etcd answered");
        }
        host.EndOutgoing(_ctx.Entry, _ctx.Owner);
    }

    private readonly object _settle = new();
    private bool _discarded;

    /// <summary>
    /// `lm stop` on the copy an unsettled rollback keeps paused: it goes and never runs again here
    /// (the settle thread, once etcd answers, only moves the epoch past any commit and removes the
    /// record). False when the rollback settled meanwhile (the guest runs again, or went).
    /// </summary>
    public bool DiscardUnsettled()
    {
        lock (_settle)
        {
            if (_ctx.Phase != MigrationPhase.Unsettled || _discarded) return false;
            _discarded = true;
            Drop($"the copy paused by an unsettled rollback is discarded by the operator (lm stop); it never runs again here");
            return true;
        }
    }

    /// <summary>The record names another host: the paused guest goes, and the destination is not told to discard (it may be the owner).</summary>
    private void Drop(string log)
    {
        _ctx.Conn?.Dispose();
        _ctx.Guest.Pause();
        Strategy?.Release();
        _ctx.Guest.Dispose();
        lock (_ctx.Host.Lock) _ctx.Host.RemoveEntry(_ctx.Entry);
        _ctx.Log(log);
    }

    private void ResumeAfterRollBack(string why)
    {
        _commit.Abort(Record(null));
        try { _ctx.Conn?.Send(new Envelope { Abort = new Abort { Reason = why } }); } catch (IOException) { }
        _ctx.Conn?.Dispose();
        _ctx.Guest.Pause(); // the recorder is the guest thread's: stop it only while the guest stands still
        Strategy?.Release();
        _ctx.Throttle.Clear();
        ReopenConsole();
        _ctx.DiskSender.ResumeCommits();
        _ctx.Guest.Resume(); // also when it was never paused: harmless
        _ctx.Log($"failed ({why}); '{_ctx.Command.Name}' keeps running here");
    }

    /// <summary>After commit, the operator's (or the destination's) word: the held copy becomes the running guest again.</summary>
    public void ResumeHere(string why)
    {
        _commit.Abort(Record(null)); // a destination asking later is told abort
        _ctx.Conn?.Dispose();
        Strategy?.Release();
        _ctx.Throttle.Clear();
        ReopenConsole();
        _ctx.DiskSender.ResumeCommits();
        _ctx.Host.Reinstate(_ctx.Entry, _ctx.Owner, _ctx.Guest);
        _ctx.Phase = MigrationPhase.RolledBack;
        _ctx.Guest.Resume();
        _ctx.Log($"'{_ctx.Command.Name}' resumed here from its held copy ({why})");
    }
}
