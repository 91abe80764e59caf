using System.Diagnostics;
using LiveMigration.Guest;
using LiveMigration.Guest.Memory;
using LiveMigration.Guest.State;
using LiveMigration.Migration.Protocol;
using LiveMigration.Replayer;
using LiveMigration.Trace;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Destination side of log shipping: the machine built from C0's pages is verified against C0's
/// digest, then a replay session runs on it on its own thread, fed with the log frames as they
/// arrive, and reports its icount and speed on the return path. At the final state it replays to
/// exactly the source's pause icount (where the log holds a digest the replayer checks). Under auto
/// it keeps a copy-on-write snapshot of C0 and a dirty client started at C0, so that a fallback can
/// return exactly to C0 (<see cref="ReturnToC0"/>).
/// </summary>
internal sealed class LogReplayArrival(DestinationContext ctx, bool keepC0) : IArrivalStrategy
{
    private static readonly TimeSpan CatchUpTimeout = TimeSpan.FromSeconds(120);

    private TraceStreamReader? _trace;
    private ReplaySession? _session;
    private Thread? _replayThread;
    private readonly Queue<TraceFrame> _incoming = new();
    private readonly AutoResetEvent _wake = new(false);
    private volatile bool _stopReplay;
    private ulong _until = ulong.MaxValue;
    private string? _replayError;
    private readonly ManualResetEventSlim _replayDone = new();
    /// <summary>Held by whoever drives the replay session: the replay thread, or the final catch-up.</summary>
    private readonly object _sessionGate = new();
    private bool _takenOver;
    private MachineSnapshot? _c0;
    private DirtyClient? _sinceC0;
    private readonly byte[] _pageScratch = new byte[GuestMemory.PageSize];

    /// <summary>True once the source fell back: log frames still in flight are dropped.</summary>
    public bool Dropped { get; private set; }

    public void OnCheckpointDone(CheckpointDone done)
    {
        var machine = ctx.Machine!;
        machine.RestoreDeviceState(new StateReader(done.DeviceState.Memory));
        ulong digest = machine.ComputeDigest();
        if (machine.Icount != done.Icount || digest != done.Digest)
            throw new MigrationFailedException($"checkpoint C0 does not verify: digest {digest:x16} at icount {machine.Icount}, source sent {done.Digest:x16} at {done.Icount}");
        if (keepC0)
        {
            _c0 = machine.TakeSnapshot();
            _sinceC0 = machine.Memory.CreateDirtyClient("since-c0");
            _sinceC0.CollectAndClear(new List<int>()); // a new client starts all dirty
        }
        _session = ReplaySession.FromMachine(machine, new ReplayOptions { Verify = true });
        ctx.Host.Log($"'{ctx.Name}': checkpoint C0 verified at icount {done.Icount}; replaying the log");
        ctx.State = DestinationState.Replaying;
        _replayThread = new Thread(ReplayLoop) { IsBackground = true, Name = $"replay-{ctx.Name}" };
        _replayThread.Start();
    }

    public void OnLog(LogChunk chunk)
    {
        if (Dropped) return; // in flight when the source fell back
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
                ctx.WhileStalled();
                bool wait;
                lock (_sessionGate)
                {
                    if (_takenOver) return; // the final catch-up runs the rest on the receiving thread
                    FeedFrames(session);
                    ulong until = Volatile.Read(ref _until);
                    ulong before = machine.Icount;
                    long t0 = Stopwatch.GetTimestamp();
                    double cap = ctx.Host.Options.ReplayMipsCap;
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
                        try { ctx.Conn.Send(new Envelope { ReplayProgress = new ReplayProgress { Icount = machine.Icount, ReplayMips = mips } }); }
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
                            return;
                        case ReplayStatus.ReachedUntil:
                            wait = false;
                            break;
                        default:
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

    /// <summary>Test hook (<see cref="Hosting.HostOptions.ReplayMipsCap"/>): sleeps so the replay averages at most <paramref name="mips"/>.</summary>
    private static void CapReplaySpeed(ulong ran, long startTimestamp, double mips)
    {
        double due = ran / (mips * 1e6) - Stopwatch.GetElapsedTime(startTimestamp).TotalSeconds;
        if (due > 0) Thread.Sleep(TimeSpan.FromSeconds(due));
    }

    /// <summary>Hands the frames received so far to the session (whoever holds the session gate).</summary>
    private void FeedFrames(ReplaySession session)
    {
        lock (_incoming) while (_incoming.TryDequeue(out var f)) session.AddFrame(f);
    }

    private static string ReplayFailure(ReplaySession session, ReplayStatus status) =>
        session.Divergence is { } d ? $"replay diverged at icount {d.Icount}: {d.Reason}" : $"replay ended early ({status})";

    /// <summary>Replays the log up to the final icount; the device state is not applied: the replay must have produced it (the digest proves it).</summary>
    public string? ReachFinal(FinalState final, out ulong digest)
    {
        digest = 0;
        if (_session == null) throw new MigrationFailedException("final state before checkpoint C0 was complete");
        Volatile.Write(ref _until, final.Icount);
        if (ctx.Host.Options.ReplayMipsCap <= 0 && TakeOverTail(final.Icount)) _session.Dispose();
        else
        {
            _wake.Set();
            if (!_replayDone.Wait(CatchUpTimeout)) throw new MigrationFailedException($"replay did not reach icount {final.Icount} in {CatchUpTimeout.TotalSeconds:F0} s");
            if (_replayError != null) throw new MigrationFailedException(_replayError);
            _session.Dispose(); // the machine stays; it is ours
        }
        return FullDigest.Mismatch(ctx.Machine!, final, out digest);
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
            if (status != ReplayStatus.ReachedUntil || session.Machine.Icount != until)
                throw new MigrationFailedException(ReplayFailure(session, status));
        }
        _wake.Set(); // the replay thread sees it was taken over and ends
        return true;
    }

    /// <summary>No fallback can come after the final state: the guest must not run on with a snapshot to preserve.</summary>
    public void AfterAck(FinalState final, ulong digest)
    {
        DropC0();
        FullDigest.LogVerified(ctx, final, digest);
    }

    public void BeforeResume() { }
    public bool ServesAfterGo => false;

    public void Stop()
    {
        _stopReplay = true;
        _wake.Set();
        if (_replayThread != null && Thread.CurrentThread != _replayThread) _replayThread.Join(5000);
    }

    /// <summary>The source gave up on log shipping: stop replaying and return to C0, exactly (digest-checked).</summary>
    public int ReturnToC0(PrecopyFallback fallback)
    {
        if (!keepC0 || _c0 == null || _sinceC0 == null) throw new ProtocolException("fallback to pre-copy without a retained checkpoint C0");
        Stop();
        if (_replayThread != null && _replayThread.IsAlive) throw new MigrationFailedException("the replay did not stop for the fallback to pre-copy");
        _session?.Dispose();
        _session = null;
        lock (_incoming) _incoming.Clear();
        Dropped = true;

        var machine = ctx.Machine!;
        var memory = machine.Memory;
        var pages = new List<int>();
        _sinceC0.CollectAndClear(pages);
        foreach (int page in pages)
        {
            if (_c0.Memory.IsZeroPage(page)) memory.ZeroPage(page);
            else
            {
                _c0.Memory.ReadPage(page, _pageScratch);
                memory.WritePage(page, _pageScratch);
            }
        }
        if (_c0.Disk != null) ctx.Disk?.RevertTo(_c0.Disk); // the replay wrote the disk too
        machine.RestoreDeviceState(new StateReader(_c0.DeviceState));
        ulong digest = machine.ComputeDigest();
        if (machine.Icount != _c0.Icount || digest != _c0.Digest || _c0.Icount != fallback.C0Icount)
            throw new MigrationFailedException($"dropping the replay did not restore C0: digest {digest:x16} at icount {machine.Icount}, C0 is {_c0.Digest:x16} at {_c0.Icount} (source: {fallback.C0Icount})");
        DropC0();
        return pages.Count;
    }

    /// <summary>Lets go of the fallback's C0 snapshot and its dirty client (after the fallback, or once the final state is verified).</summary>
    private void DropC0()
    {
        _sinceC0?.Release();
        _sinceC0 = null;
        _c0?.Dispose();
        _c0 = null;
    }
}
