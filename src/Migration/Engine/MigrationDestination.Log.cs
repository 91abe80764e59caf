using System.Diagnostics;
using LiveMigration.Guest.State;
using LiveMigration.Migration.Protocol;
using LiveMigration.Replayer;
using LiveMigration.Trace;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Destination side of log shipping: the machine built from C0's pages is verified against C0's
/// digest, then a replay session runs on it on its own thread, fed with the log frames as they
/// arrive, and reports its icount and speed on the return path. At the final state it replays to
/// exactly the source's pause icount (where the log holds a digest the replayer checks).
/// </summary>
internal sealed partial class MigrationDestination
{
    private static readonly TimeSpan CatchUpTimeout = TimeSpan.FromSeconds(120);

    private TraceStreamReader? _trace;
    private ReplaySession? _session;
    private Thread? _replayThread;
    private readonly Queue<TraceFrame> _incoming = new();
    private readonly AutoResetEvent _wake = new(false);
    private volatile bool _stopReplay;
    private ulong _until = ulong.MaxValue;
    private ReplayStatus? _replayResult;
    private string? _replayError;
    private readonly ManualResetEventSlim _replayDone = new();

    private void OnCheckpointDone(CheckpointDone done)
    {
        var machine = _machine!;
        machine.RestoreDeviceState(new StateReader(done.DeviceState.Memory));
        ulong digest = machine.ComputeDigest();
        if (machine.Icount != done.Icount || digest != done.Digest)
            throw new MigrationFailedException($"checkpoint C0 does not verify: digest {digest:x16} at icount {machine.Icount}, source sent {done.Digest:x16} at {done.Icount}");
        if (_setup.Strategy == Strategy.Auto) KeepC0(machine, done);
        _session = ReplaySession.FromMachine(machine, new ReplayOptions { Verify = true });
        _host.Log($"'{_setup.Name}': checkpoint C0 verified at icount {done.Icount}; replaying the log");
        State = "replaying";
        _replayThread = new Thread(ReplayLoop) { IsBackground = true, Name = $"replay-{_setup.Name}" };
        _replayThread.Start();
    }

    private void OnLog(LogChunk chunk)
    {
        if (_trace == null)
        {
            _trace = new TraceStreamReader();
            _trace.Append(TraceFormat.Magic);
        }
        _trace.Append(chunk.Frame.Span);
        while (_trace.TryReadFrame(out var frame) == StreamReadStatus.Frame)
        {
            if (frame!.Kind == FrameKind.Header) continue;
            lock (_incoming) _incoming.Enqueue(frame);
        }
        _wake.Set();
    }

    /// <summary>Held by whoever drives the replay session: the replay thread, or the final catch-up.</summary>
    private readonly object _sessionGate = new();
    private bool _takenOver;

    private void ReplayLoop()
    {
        var session = _session!;
        var machine = session.Machine;
        double mips = 0;
        long lastReport = 0;
        ulong lastReported = 0;
        try
        {
            while (!_stopReplay)
            {
                WhileStalled();
                bool wait;
                lock (_sessionGate)
                {
                    if (_takenOver) return; // the final catch-up runs the rest on the receiving thread
                    FeedFrames(session);
                    ulong until = Volatile.Read(ref _until);
                    ulong before = machine.Icount;
                    long t0 = Stopwatch.GetTimestamp();
                    double cap = _host.Options.ReplayMipsCap;
                    ulong runTo = cap > 0 ? Math.Min(until, before + Math.Max(200_000UL, (ulong)(cap * 1e6 * 0.01))) : until; // slices under a cap, long enough to measure
                    var status = session.Run(runTo);
                    if (cap > 0) CapReplaySpeed(machine.Icount - before, t0, cap);
                    bool sliceEnd = status == ReplayStatus.ReachedUntil && runTo < until;
                    double seconds = Stopwatch.GetElapsedTime(t0).TotalSeconds;
                    ulong ran = machine.Icount - before;
                    if (ran > 100_000 && seconds > 0) mips = mips == 0 ? ran / seconds / 1e6 : 0.7 * mips + 0.3 * (ran / seconds / 1e6);
                    // Every 20 ms, and whenever the replay caught up with the log (the source's final approach waits for it).
                    if (Stopwatch.GetElapsedTime(lastReport).TotalMilliseconds >= 20 || status != ReplayStatus.NeedMoreEvents || machine.Icount != lastReported)
                    {
                        lastReport = Stopwatch.GetTimestamp();
                        lastReported = machine.Icount;
                        try { _conn.Send(new Envelope { ReplayProgress = new ReplayProgress { Icount = machine.Icount, ReplayMips = mips } }); }
                        catch (IOException) { }
                    }
                    if (sliceEnd) continue;
                    switch (status)
                    {
                        case ReplayStatus.NeedMoreEvents:
                            // Caught up: hash the pages replayed since the last digest while waiting,
                            // so the digest at the switchover (downtime) has little left to do.
                            machine.Memory.RefreshRamDigest();
                            wait = true;
                            break;
                        case ReplayStatus.ReachedUntil when until != ulong.MaxValue:
                            _replayResult = status;
                            return;
                        case ReplayStatus.ReachedUntil:
                            wait = false;
                            break;
                        default:
                            _replayResult = status;
                            _replayError = ReplayFailure(session, status);
                            return;
                    }
                }
                if (wait) _wake.WaitOne(5);
            }
        }
        catch (Exception e)
        {
            // Any failure of the replay thread fails the migration (the source resumes), never the host.
            _replayError = $"replay failed: {e.GetType().Name}: {e.Message}";
        }
        finally { _replayDone.Set(); }
    }

    /// <summary>Hands the frames received so far to the session (whoever holds the session gate).</summary>
    private void FeedFrames(ReplaySession session)
    {
        lock (_incoming) while (_incoming.TryDequeue(out var f)) session.AddFrame(f);
    }

    private static string ReplayFailure(ReplaySession session, ReplayStatus status) =>
        session.Divergence is { } d ? $"replay diverged at icount {d.Icount}: {d.Reason}" : $"replay ended early ({status})";

    /// <summary>Replays the log up to the final icount (log shipping); nothing to do for stop-and-copy.</summary>
    private void CatchUp(FinalState final)
    {
        if (RestoresFinalDeviceState) { _machine!.RestoreDeviceState(new StateReader(final.DeviceState.Memory)); return; }
        if (_session == null) throw new MigrationFailedException("final state before checkpoint C0 was complete");
        Volatile.Write(ref _until, final.Icount);
        if (_host.Options.ReplayMipsCap <= 0 && TakeOverTail(final.Icount)) { _session.Dispose(); return; }
        _wake.Set();
        if (!_replayDone.Wait(CatchUpTimeout)) throw new MigrationFailedException($"replay did not reach icount {final.Icount} in {CatchUpTimeout.TotalSeconds:F0} s");
        if (_replayError != null) throw new MigrationFailedException(_replayError);
        _session.Dispose(); // the machine stays; it is ours
        // The device state is not applied: the replay must have produced it (the digest check proves it).
    }

    /// <summary>
    /// The tail is replayed right here, on the thread that received the final state, once the replay
    /// thread lets go of the session (it is usually parked, caught up): two thread hand-offs fewer in
    /// the downtime. False when the replay thread already finished on its own.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    private bool TakeOverTail(ulong until)
    {
        var session = _session!;
        lock (_sessionGate)
        {
            if (_replayDone.IsSet) return false;
            _takenOver = true;
            if (_replayError != null) throw new MigrationFailedException(_replayError);
            FeedFrames(session);
            var status = session.Run(until);
            _replayResult = status;
            if (status != ReplayStatus.ReachedUntil || session.Machine.Icount != until)
                throw new MigrationFailedException(ReplayFailure(session, status));
        }
        _wake.Set(); // the replay thread sees it was taken over and ends
        return true;
    }

    private void StopReplay()
    {
        _stopReplay = true;
        _wake.Set();
        if (_replayThread != null && Thread.CurrentThread != _replayThread) _replayThread.Join(5000);
    }
}
