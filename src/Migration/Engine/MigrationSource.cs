using System.Collections.Concurrent;
using System.Diagnostics;
using Google.Protobuf;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The sending half of one migration, run on the source host on behalf of `lm migrate`. See
/// Protocol/PROTOCOL.md for the message sequence diagram and the failure table. Invariant: until
/// <see cref="_decision"/> is GO (taken on the destination's matching ACK) every failure or cancel
/// resumes the guest here; after it the guest belongs to the destination, whether or not GO arrives
/// there (it asks again), and this side keeps its paused copy until the destination confirms it runs.
/// </summary>
internal sealed partial class MigrationSource
{
    private TimeSpan AckTimeout => _host.Options.AckTimeout;
    private TimeSpan ResumedTimeout => _host.Options.ResumeConfirmTimeout;

    private readonly GuestHost _host;
    private readonly GuestEntry _entry;
    private readonly GuestInstance _guest;
    private readonly MigrateCommand _command;
    private readonly CancellationTokenSource _cancel = new();
    private readonly SwitchoverDecision _decision = new();
    private readonly PeerLiveness _peer;
    private readonly BlockingCollection<Envelope> _inbox = new();
    private readonly Stopwatch _clock = new();
    private readonly List<TimelineSample> _timeline = [];
    private readonly PageSender _pages = new();
    private bool Committed => _decision.Value == Decision.Go;
    private long _epoch;
    private Connection? _conn;
    private volatile MigrationPhase _phase = MigrationPhase.Setup;
    private double _tSetupDone, _tCheckpointDone, _tLogDone, _tPause = -1, _tResumed = -1;
    private volatile Exception? _readerError;
    private long _replayIcount;
    private double _replayMips;
    private double _throttle, _maxThrottle, _throttleSum;
    private int _throttleSamples;

    public MigrationSource(GuestHost host, GuestEntry entry, MigrateCommand command)
    {
        _host = host;
        _entry = entry;
        _guest = entry.Instance!;
        _command = command;
        _target = command.Target;
        _peer = new PeerLiveness(host.Options.PeerSilenceLimit);
        Strategy = command.Strategy;
        if (!Strategies.IsKnown(Strategy)) throw new HostException($"unknown strategy {(int)command.Strategy} (expected {string.Join(", ", Strategies.Names)})");
    }

    public string Id { get; } = Guid.NewGuid().ToString("N")[..16];
    public Strategy Strategy { get; }
    public MigrationPhase Phase => _phase;

    /// <summary>Cancels unless the migration has committed; returns false when it is too late.</summary>
    public bool Cancel()
    {
        if (!_decision.TakeAbort()) return false;
        _cancel.Cancel();
        return true;
    }

    /// <returns>True when the test hook cut the connection here.</returns>
    private bool Fault(FaultPoint point)
    {
        if (_host.Options.Fault?.Invoke(point) != true) return false;
        _host.Log($"fault injection: cutting the migration connection at {point}");
        _conn?.Abort();
        return true;
    }

    public MigrationReport Run(Action<MigrationProgress>? progress)
    {
        _clock.Start();
        var token = _cancel.Token;
        var report = new MigrationReport
        {
            Name = _command.Name, Strategy = Strategy, Source = _host.Address, Destination = _command.Target,
            MigrationId = Id, MemorySize = _guest.Machine.Config.MemorySize,
        };
        using var reporter = new ProgressReporter(this, progress);
        ulong digest = 0, icount = 0;
        try
        {
            _host.Log($"migration {Id}: '{_command.Name}' to {_command.Target} ({Strategies.Name(Strategy)})");
            Setup(token);
            Fault(FaultPoint.Setup);
            if (Strategy == Strategy.Stopcopy) (icount, digest) = StopAndCopy(token);
            else if (Strategy == Strategy.Precopy) { SwitchStrategy(Strategy.Precopy, "chosen"); (icount, digest) = Precopy(token); }
            else if (Strategy == Strategy.Postcopy) { SwitchStrategy(Strategy.Postcopy, "chosen"); (icount, digest) = PostcopyPrepare(token); }
            else
            {
                SwitchStrategy(Strategy.Log, Strategy == Strategy.Auto ? "auto starts with log shipping" : "chosen");
                (icount, digest) = LogShipping(token);
            }
            _phase = MigrationPhase.AwaitingAck;
            double tFinal = Now;
            CloseConsoleEarly();
            Fault(FaultPoint.AfterFinalState);
            // The matching ACK commits and sends GO on the thread that reads it: no hand-off in the downtime.
            _onAck = ack => ack.Digest == digest && ack.Icount == icount && CommitAndSendGo();
            Ack ackMessage;
            try { ackMessage = Expect(Envelope.BodyOneofCase.Ack, AckTimeout, token).Ack; }
            finally { _onAck = null; }
            if (ackMessage.Digest != digest || ackMessage.Icount != icount)
                throw new MigrationFailedException($"destination verified icount {ackMessage.Icount} digest {ackMessage.Digest:x16}, source has {icount} {digest:x16}");

            if (!Committed) { Commit(); RecordMove(); Fault(FaultPoint.AfterAck); } // the reader could not commit (an abort that won: this throws)
            _host.Log($"migration {Id}: switchover: final state sent {(tFinal - _tPause) * 1000:F2} ms after the pause, ACK and GO {(_tGo - _tPause) * 1000:F2} ms after it");
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or MigrationFailedException or HostException or InvalidOperationException)
        {
            string why = e is OperationCanceledException ? "cancelled" : e.Message;
            if (_decision.TakeAbort())
            {
                RollBack(why);
                report.Success = false;
                report.Error = why;
                reporter.Stop();
                FillReport(report);
                return report;
            }
            // The matching ACK committed first (on the return-path reader): the guest is the destination's now.
            _host.Log($"migration {Id}: committed before '{why}' could abort it");
        }
        report.Icount = icount;
        report.Digest = digest;
        report.DigestVerified = true;
        report.Committed = true;
        FinishAfterCommit(report);
        reporter.Stop();
        FillReport(report);
        return report;
    }

    private void Setup(CancellationToken token)
    {
        // FLEET: the epoch this host owns the guest under; the commit compares it.
        _epoch = _host.Ownership.EpochIfOwner(_command.Name, _host.Address) ?? throw new OwnershipLostException($"the fleet record of '{_command.Name}' does not name this host");
        _conn = _host.Connect(_command.Target);
        _conn.ClientHandshake(Purpose.Migrate);
        _conn.SendTimeout = _peer.Limit; // a peer that stops reading fails the send, it does not hang it
        _peer.Heard();
        if (_command.BandwidthBytesPerSecond > 0) _conn.Limiter = new TokenBucket((long)_command.BandwidthBytesPerSecond);
        _conn.Send(new Envelope
        {
            Setup = new MigrateSetup
            {
                MigrationId = Id, Name = _command.Name, MemorySize = _guest.Machine.Config.MemorySize, Strategy = Strategy,
                PageCount = (uint)_guest.Machine.Memory.PageCount, Source = _host.Address, ImageName = _guest.ImageName,
                Machine = _host.Options.SentIdentity?.Invoke(MachineIdentities.Of(_guest.Machine)) ?? MachineIdentities.Of(_guest.Machine),
            },
        });
        var conn = _conn;
        new Thread(() => ReadReturnPath(conn)) { IsBackground = true, Name = $"migrate-{Id}-rx" }.Start();
        var reply = Expect(Envelope.BodyOneofCase.SetupReply, TimeSpan.FromSeconds(10), token).SetupReply;
        if (!reply.Accepted) throw new MigrationFailedException($"destination refused: {reply.Error}");
        _tSetupDone = Now;
    }

    private (ulong Icount, ulong Digest) StopAndCopy(CancellationToken token)
    {
        _phase = MigrationPhase.StopAndCopy;
        Pause();
        var machine = _guest.Machine;
        var memory = machine.Memory;
        _pages.Send(_conn!, memory.PageCount, memory.IsZeroPage, (p, dst) => memory.PageSpan(p).CopyTo(dst),
            ByteCategory.Checkpoint, token, () => Fault(FaultPoint.Checkpoint));
        _tCheckpointDone = _tLogDone = Now;
        ulong digest = _guest.Machine.ComputeDigest();
        SendFinalState(token, digest);
        return (_guest.Machine.Icount, digest);
    }

    /// <summary>
    /// Every strategy's pause: only toward a peer heard from lately that has taken what was sent (log
    /// shipping's replay progress already proves that: <paramref name="proven"/>).
    /// </summary>
    private void Pause(bool proven = false)
    {
        _peer.WaitCaughtUp(proven ? 0 : _conn!.SentTotal, _cancel.Token);
        _guest.Pause();
        _tPause = Now;
        _pauseTimestamp = Stopwatch.GetTimestamp();
    }

    private long _pauseTimestamp;
    private Resumed? _resumed;

    private void OnResumed(Resumed resumed)
    {
        _tResumed = Now;
        _resumed = resumed;
    }

    private void SendFinalState(CancellationToken token, ulong digest)
    {
        _phase = MigrationPhase.Switchover;
        Fault(FaultPoint.BeforeAck); // paused, the final state not yet sent: the destination cannot ACK
        var machine = _guest.Machine;
        var final = new FinalState
        {
            Icount = machine.Icount, DeviceState = ByteString.CopyFrom(machine.SaveDeviceState()), Digest = digest,
            Mtime = Math.Max(_guest.Port.Now, machine.Clint.Time), Exited = machine.ExitCode != null,
        };
        _conn!.Send(new Envelope { FinalState = final }, ByteCategory.State, token);
    }

    /// <summary>The point of no return: from here the guest belongs to the destination.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    private void Commit()
    {
        Fault(FaultPoint.BeforeCommit);
        if (!_decision.TryCommit(CommitOwnership))
            throw _commitRefusal is { } refused ? new OwnershipLostException(refused) : new OperationCanceledException("the migration was already decided: abort");
        var (input, backlog) = _consoleClosed.Wait(TimeSpan.FromSeconds(5)) && _consoleHandoff is { } h ? h : _guest.Console.Close();
        _host.RecordOutcome(Id, new Outcome(Decision.Go, input, backlog)); // journaled before GO can reach anyone
        _pendingGo = new Go { ConsoleInput = ByteString.CopyFrom(input), ConsoleBacklog = ByteString.CopyFrom(backlog) };
    }

    private volatile string? _commitRefusal;

    /// <summary>
    /// The commit hook GO is taken through: the ownership's commit (pairwise: nothing to do; a
    /// fleet: the etcd transaction owner source/epoch n -> destination/n+1). Anything but a
    /// confirmed commit decides abort, and the rollback settles the record before the guest resumes.
    /// </summary>
    private bool CommitOwnership()
    {
        string? refused;
        try { refused = _host.Ownership.CommitMove(_command.Name, _host.Address, _command.Target, _epoch); }
        catch (Exception e) when (e is HostException or IOException or InvalidOperationException) { refused = e.Message; }
        _commitRefusal = refused;
        return refused == null;
    }

    private (byte[] Input, byte[] Backlog)? _consoleHandoff;
    private readonly ManualResetEventSlim _consoleClosed = new();

    /// <summary>
    /// Right after the final state, while the destination verifies it: the guest is paused, so
    /// nothing takes console input any more; closing the console now (draining what its client
    /// sent) keeps that work out of the ACK -> GO path. A rollback reopens it with the same bytes.
    /// </summary>
    private void CloseConsoleEarly()
    {
        _consoleHandoff = _guest.Console.Close();
        _consoleClosed.Set();
    }

    /// <summary>A rolled-back migration gives the guest a console again, with the input it had not read.</summary>
    private void ReopenConsole()
    {
        if (_consoleHandoff is not { } h) return;
        _consoleHandoff = null;
        var console = _host.CreateConsole();
        console.Prepend(h.Input);
        console.AddBacklog(h.Backlog);
        var old = _guest.Console;
        _guest.Port.ReplaceConsole(console);
        old.Dispose();
        _host.Log($"migration {Id}: '{_command.Name}' has a new console at {_host.ConsoleAddress(console)}");
    }

    /// <summary>The bookkeeping of a commit, done once GO is on its way (it is not downtime).</summary>
    private void RecordMove()
    {
        lock (_host.Lock)
        {
            if (_entry.Instance == null && _entry.MovedTo == _command.Target) return;
            _entry.Instance = null;
            _entry.MovedTo = _command.Target;
        }
        _host.Log($"migration {Id}: committed at icount {_guest.Machine.Icount}");
    }

    private Go? _pendingGo;
    private volatile Func<Ack, bool>? _onAck;
    private volatile bool _goSent;
    private volatile Exception? _goFailure;
    private double _tGo;

    /// <summary>On the return-path reader, for the ACK that matches: commit, then GO at once.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    private bool CommitAndSendGo()
    {
        try { Commit(); }
        catch (Exception e) when (e is OperationCanceledException or MigrationFailedException) { return false; } // cancelled first (or the record moved): the main thread rolls back
        Fault(FaultPoint.AfterAck);
        try
        {
            _conn!.Send(new Envelope { Go = _pendingGo });
            _goSent = true;
        }
        catch (IOException e) { _goFailure = e; }
        _tGo = Now;
        RecordMove();
        return true;
    }

    private void FinishAfterCommit(MigrationReport report)
    {
        _phase = MigrationPhase.Go;
        Exception? goLost = _goFailure;
        if (goLost == null && !_goSent)
        {
            try { _conn!.Send(new Envelope { Go = _pendingGo }); _tGo = Now; }
            catch (IOException e) { goLost = e; }
        }
        if (_manifest != null)
        {
            // Post-copy: the destination learns GO by asking again, then needs every page we hold.
            if (goLost == null) ServePostcopy(report);
            else HoldForResume(report, null, goLost);
            return;
        }
        // Success only once the destination said the guest runs there; until then this paused copy is the guest.
        if (AwaitResumeConfirmation(report, goLost))
        {
            report.Success = true;
            ReleaseCopy($"'{_command.Name}' now runs on {_target}");
            return;
        }
        report.Success = false;
        HoldUnconfirmed(report);
    }

    /// <summary>Lets the paused source copy go (the destination runs the guest).</summary>
    private void ReleaseCopy(string why)
    {
        _phase = MigrationPhase.Done;
        _conn?.Dispose();
        _host.ReleaseHold(_entry, this);
        ReleaseFallbackState(); // after the resume, not in the downtime: freeing C0's preserved pages takes a while
        _host.Ownership.HandedOver(_command.Name, _guest.Machine); // FLEET: the final state becomes the new epoch's checkpoint
        _guest.Dispose();
        _host.Log($"migration {Id}: {why}");
    }

    private void RollBack(string why)
    {
        _phase = MigrationPhase.RolledBack;
        // FLEET: once paused a commit may have been tried: the record must first say that no commit or
        // takeover can still apply (epoch moved on, this host the owner); only then is the destination
        // told to discard and the guest resumed here. Pairwise: nothing to settle.
        if (_tPause >= 0 && _host.Ownership.Reclaim(_command.Name, _host.Address, _epoch) == null)
        {
            _conn?.Dispose(); // no Abort: the host the record names may be the destination
            _guest.Pause();
            StopLogging();
            ReleaseFallbackState();
            _guest.Dispose();
            lock (_host.Lock) _host.RemoveEntry(_entry);
            _host.Log($"migration {Id}: failed ({why}); the fleet record of '{_command.Name}' names another host: dropped here");
            return;
        }
        _host.RecordOutcome(Id, new Outcome(Decision.Abort, [], []));
        try { _conn?.Send(new Envelope { Abort = new Abort { Reason = why } }); } catch (IOException) { }
        _conn?.Dispose();
        _guest.Pause(); // the recorder is the guest thread's: stop it only while the guest stands still
        StopLogging();
        ReleaseFallbackState();
        _guest.Port.Throttle = 0;
        ReopenConsole();
        _guest.Resume(); // also when it was never paused: harmless
        _host.Log($"migration {Id}: failed ({why}); '{_command.Name}' keeps running here");
    }

    private void ReadReturnPath(Connection conn)
    {
        try
        {
            while (true)
            {
                var e = conn.Receive();
                _peer.Heard();
                if (e.BodyCase == Envelope.BodyOneofCase.Heartbeat)
                {
                    _peer.Heartbeat(e.Heartbeat.ReceivedBytes);
                    continue;
                }
                if (e.BodyCase == Envelope.BodyOneofCase.PageRequest)
                {
                    _pageRequests.Add((int)e.PageRequest.Page);
                    continue;
                }
                if (e.BodyCase == Envelope.BodyOneofCase.Ack)
                {
                    if (Fault(FaultPoint.AckArrived)) continue; // the cut loses this ACK: the source never read it
                    _onAck?.Invoke(e.Ack);
                }
                if (e.BodyCase == Envelope.BodyOneofCase.ReplayProgress)
                {
                    Interlocked.Exchange(ref _replayIcount, (long)e.ReplayProgress.Icount);
                    _replayMips = e.ReplayProgress.ReplayMips;
                    continue;
                }
                _inbox.Add(e);
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            _readerError = e;
            _inbox.Add(new Envelope()); // wakes a waiter
            _pageRequests.Add(-1);
        }
    }

    /// <summary>The next message from the destination, which must be <paramref name="kind"/>; a peer silent past its limit fails it early.</summary>
    private Envelope Expect(Envelope.BodyOneofCase kind, TimeSpan timeout, CancellationToken token)
    {
        var until = DateTime.UtcNow + timeout;
        Envelope? e;
        while (!_inbox.TryTake(out e, (int)Math.Clamp((until - DateTime.UtcNow).TotalMilliseconds, 0, 50), token))
        {
            if (DateTime.UtcNow >= until) throw new MigrationFailedException($"timed out after {timeout.TotalSeconds:F1} s waiting for {kind} from the destination");
            _peer.Check();
        }
        if (e.BodyCase == kind) return e;
        if (e.BodyCase == Envelope.BodyOneofCase.Abort) throw new MigrationFailedException($"destination aborted: {e.Abort.Reason}");
        if (e.BodyCase == Envelope.BodyOneofCase.None)
        {
            _inbox.Add(e); // keep the sentinel for later waiters
            throw new IOException($"lost the connection to the destination: {_readerError?.Message}");
        }
        throw new MigrationFailedException($"expected {kind} from the destination, got {e.BodyCase}");
    }

    private double Now => _clock.Elapsed.TotalSeconds;
}

/// <summary>The migration cannot go on; before commit the guest resumes on the source.</summary>
public class MigrationFailedException(string message) : Exception(message);
