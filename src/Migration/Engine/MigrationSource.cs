using System.Collections.Concurrent;
using System.Diagnostics;
using Google.Protobuf;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The sending half of one migration, run on the source host on behalf of `lm migrate`. See
/// Protocol/PROTOCOL.md for the message sequence diagram and the failure table. Invariant: until <see cref="_committed"/> is set (on the
/// destination's ACK) every failure or cancel resumes the guest here; after it the guest belongs
/// to the destination, whether or not GO arrives there (it asks again).
/// </summary>
internal sealed partial class MigrationSource
{
    private static readonly TimeSpan AckTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan ResumedTimeout = TimeSpan.FromSeconds(10);

    private readonly GuestHost _host;
    private readonly GuestEntry _entry;
    private readonly GuestInstance _guest;
    private readonly MigrateCommand _command;
    private readonly CancellationTokenSource _cancel = new();
    private readonly object _decision = new();
    private readonly BlockingCollection<Envelope> _inbox = new();
    private readonly Stopwatch _clock = new();
    private readonly List<TimelineSample> _timeline = [];
    private readonly PageSender _pages = new();
    private bool _committed;
    private long _epoch;
    private Connection? _conn;
    private string _phase = "setup";
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
        Strategy = command.Strategy is "" or null ? "auto" : command.Strategy;
        if (Strategy is not ("log" or "stopcopy" or "precopy" or "auto" or "postcopy")) throw new HostException($"unknown strategy '{command.Strategy}' (expected auto, log, precopy, stopcopy or postcopy)");
    }

    public string Id { get; } = Guid.NewGuid().ToString("N")[..16];
    public string Strategy { get; }
    public string Phase => _phase;

    /// <summary>Cancels unless the migration has committed; returns false when it is too late.</summary>
    public bool Cancel()
    {
        lock (_decision)
        {
            if (_committed) return false;
            _cancel.Cancel();
            return true;
        }
    }

    private void Fault(FaultPoint point)
    {
        if (_host.Options.Fault?.Invoke(point) == true)
        {
            _host.Log($"fault injection: cutting the migration connection at {point}");
            _conn?.Abort();
        }
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
        try
        {
            _host.Log($"migration {Id}: '{_command.Name}' to {_command.Target} ({Strategy})");
            Setup(token);
            Fault(FaultPoint.Setup);
            ulong digest, icount;
            if (Strategy == "stopcopy") (icount, digest) = StopAndCopy(token);
            else if (Strategy == "precopy") { SwitchStrategy("precopy", "chosen"); (icount, digest) = Precopy(token); }
            else if (Strategy == "postcopy") { SwitchStrategy("postcopy", "chosen"); (icount, digest) = PostcopyPrepare(token); }
            else
            {
                SwitchStrategy("log", Strategy == "auto" ? "auto starts with log shipping" : "chosen");
                (icount, digest) = LogShipping(token);
            }
            _phase = "awaiting-ack";
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

            if (!_committed) { Commit(); RecordMove(); Fault(FaultPoint.AfterAck); } // the reader could not commit (a cancel wins: this throws)
            _host.Log($"migration {Id}: switchover: final state sent {(tFinal - _tPause) * 1000:F2} ms after the pause, ACK and GO {(_tGo - _tPause) * 1000:F2} ms after it");
            report.Icount = icount;
            report.Digest = digest;
            report.DigestVerified = true;
            FinishAfterCommit(report);
        }
        catch (Exception e) when (!_committed && e is OperationCanceledException or IOException or MigrationFailedException or HostException or InvalidOperationException)
        {
            string why = e is OperationCanceledException ? "cancelled" : e.Message;
            RollBack(why);
            report.Success = false;
            report.Error = why;
        }
        reporter.Stop();
        FillReport(report);
        return report;
    }

    private void Setup(CancellationToken token)
    {
        // FLEET: the epoch this host owns the guest under; the commit compares it.
        _epoch = _host.Ownership.EpochIfOwner(_command.Name, _host.Address) ?? throw new OwnershipLostException($"the fleet record of '{_command.Name}' does not name this host");
        _conn = Connection.Connect(_command.Target);
        _conn.ClientHandshake(Purpose.Migrate);
        if (_command.BandwidthBytesPerSecond > 0) _conn.Limiter = new TokenBucket((long)_command.BandwidthBytesPerSecond);
        _conn.Send(new Envelope
        {
            Setup = new MigrateSetup
            {
                MigrationId = Id, Name = _command.Name, MemorySize = _guest.Machine.Config.MemorySize, Strategy = Strategy,
                PageCount = (uint)_guest.Machine.Memory.PageCount, Source = _host.Address, ImageName = _guest.ImageName,
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
        _phase = "stop-and-copy";
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

    private void Pause()
    {
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
        _phase = "switchover";
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
        lock (_decision)
        {
            _cancel.Token.ThrowIfCancellationRequested();
            Fault(FaultPoint.BeforeCommit);
            // FLEET: the commit point is the ownership transaction (pairwise: always true, GO decides).
            if (!_host.Ownership.CommitMove(_command.Name, _host.Address, _command.Target, _epoch))
                throw new OwnershipLostException($"the fleet record of '{_command.Name}' no longer names this host at epoch {_epoch}");
            _committed = true;
        }
        var (input, backlog) = _consoleClosed.Wait(TimeSpan.FromSeconds(5)) && _consoleHandoff is { } h ? h : _guest.Console.Close();
        _host.RecordOutcome(Id, new Outcome("go", input, backlog)); // journaled before GO can reach anyone
        _pendingGo = new Go { ConsoleInput = ByteString.CopyFrom(input), ConsoleBacklog = ByteString.CopyFrom(backlog) };
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
        var console = new ConsoleEndpoint(_host.BindAddress);
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
        _phase = "go";
        try
        {
            if (_goFailure != null) throw new IOException(_goFailure.Message, _goFailure);
            if (!_goSent) { _conn!.Send(new Envelope { Go = _pendingGo }); _tGo = Now; }
            if (_manifest != null) { ServePostcopy(report); return; } // releases the source guest only when every page arrived
            var resumed = Expect(Envelope.BodyOneofCase.Resumed, ResumedTimeout, CancellationToken.None).Resumed;
            OnResumed(resumed);
            report.Console = resumed.Console;
            report.Success = true;
        }
        catch (Exception e) when (e is IOException or MigrationFailedException or OperationCanceledException)
        {
            if (_manifest != null)
            {
                // Post-copy: the destination learns GO by asking again, then needs every page we hold.
                HoldForResume(report, null, e);
                return;
            }
            // GO may be lost: the destination asks again (GoQuery) and gets "go" from the outcome journal.
            report.Success = true;
            report.Error = $"committed, but the destination did not confirm its resume ({e.Message}); it will ask for GO again";
            _tResumed = Now;
        }
        _phase = "done";
        _conn?.Dispose();
        ReleaseFallbackState(); // after the resume, not in the downtime: freeing C0's preserved pages takes a while
        _host.Ownership.Released(_command.Name, _guest.Machine); // FLEET: the final state becomes the last checkpoint
        _guest.Dispose();
        _host.Log($"migration {Id}: '{_command.Name}' now runs on {_command.Target}");
    }

    private void RollBack(string why)
    {
        _phase = "rolled-back";
        _host.RecordOutcome(Id, new Outcome("abort", [], []));
        try { _conn?.Send(new Envelope { Abort = new Abort { Reason = why } }); } catch (IOException) { }
        _conn?.Dispose();
        _guest.Pause(); // the recorder is the guest thread's: stop it only while the guest stands still
        StopLogging();
        ReleaseFallbackState();
        _guest.Port.Throttle = 0;
        ReopenConsole();
        // FLEET: once paused, resume only after making sure no commit or takeover can still apply.
        if (_tPause >= 0 && _host.Ownership.Reclaim(_command.Name, _host.Address, _epoch) == null)
        {
            _guest.Dispose();
            lock (_host.Lock) _host.RemoveEntry(_entry);
            _host.Log($"migration {Id}: failed ({why}); the fleet record of '{_command.Name}' names another host: dropped here");
            return;
        }
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
                if (e.BodyCase == Envelope.BodyOneofCase.PageRequest)
                {
                    _pageRequests.Add((int)e.PageRequest.Page);
                    continue;
                }
                if (e.BodyCase == Envelope.BodyOneofCase.Ack) _onAck?.Invoke(e.Ack);
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

    private Envelope Expect(Envelope.BodyOneofCase kind, TimeSpan timeout, CancellationToken token)
    {
        if (!_inbox.TryTake(out var e, (int)timeout.TotalMilliseconds, token))
            throw new MigrationFailedException($"timed out waiting for {kind} from the destination");
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
