using LiveMigration.Migration.Transport;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using Google.Protobuf;
using LiveMigration.Guest;
using LiveMigration.Guest.Memory;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Recorder;
using LiveMigration.Trace;
using LiveMigration.Trace.Schema;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Log shipping (DESIGN.md "Migration", strategy 1): a copy-on-write checkpoint C0 streams while
/// the guest keeps running and recording; the log streams behind it; the destination replays and
/// reports its icount. When the predicted tail (unreplayed instructions at the destination's
/// measured replay speed, plus unsent log at the link rate) fits the downtime limit, the source
/// pauses, logs a digest at the pause icount, and sends the tail and the final state. A CPU-bound
/// guest that outruns the replay is throttled step by step until the lag shrinks. With a
/// <see cref="LogFallbackRule"/> (auto) it keeps C0 and the pages written since, and hands them to
/// pre-copy when the rule says the replay cannot keep up (<see cref="TryRun"/> returns null).
/// </summary>
internal sealed class LogShippingSource(SourceContext ctx, SourceSwitchover switchover, LogFallbackRule? fallback = null) : ISourceStrategy
{
    /// <summary>Give up converging after this long (and switch over with whatever tail is left, or fall back).</summary>
    public static readonly TimeSpan MaxLogPhase = TimeSpan.FromSeconds(30);
    private const ulong DigestInterval = 1UL << 27;
    /// <summary>How long the final approach may take before the switchover goes ahead anyway.</summary>
    private static readonly TimeSpan ApproachLimit = TimeSpan.FromMilliseconds(150);
    /// <summary>The tail the final approach aims at: replaying it is the bulk of log shipping's downtime.</summary>
    private const double ApproachTailSeconds = 0.0002;
    private const double ApproachThrottle = 0.9;
    /// <summary>Instructions may run without any input; a heartbeat frame this often lets the replay follow them.</summary>
    private static readonly long HeartbeatTicks = Stopwatch.Frequency / 200;
    private static readonly long ApproachHeartbeatTicks = Stopwatch.Frequency / 5000;

    private MachineSnapshot? _c0;
    private MachineSnapshot? _retainedC0;
    private DirtyClient? _sinceC0;
    private TraceRecorder? _recorder;
    private readonly ConcurrentQueue<byte[]> _logFrames = new();
    private readonly AutoResetEvent _logReady = new(false);
    private long _logQueuedBytes;
    private bool _logFaultDone;
    private string? _convergenceNote;
    private double _measuredThrottle;
    private long _lastFrameTimestamp;
    private volatile bool _wantDigest;
    private ulong _preDigestIcount;
    /// <summary>How long the pause may wait for the replay to verify the last digest logged before it.</summary>
    private static readonly TimeSpan PreDigestWait = TimeSpan.FromMilliseconds(20);
    private volatile bool _approach;
    private readonly ManualResetEventSlim _digestRequest = new();

    /// <summary>The log phase's throttle cap (the control loop raises it up to this).</summary>
    public double ThrottleCap => Math.Min(0.95, ctx.MaxThrottle);
    public ulong C0Icount { get; private set; }

    public SwitchoverPoint Run(CancellationToken token) =>
        TryRun(token) ?? throw new InvalidOperationException("log shipping fell back without a fallback rule");

    /// <summary>Null when it fell back (only with a fallback rule): call <see cref="StopForFallback"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    public SwitchoverPoint? TryRun(CancellationToken token)
    {
        var machine = ctx.Guest.Machine;
        var conn = ctx.Conn!;
        ctx.Phase = MigrationPhase.Checkpoint;

        // C0: stop for an instant so the snapshot and the first logged input share one icount.
        ctx.Guest.Pause();
        var c0 = _c0 = machine.TakeSnapshot();
        C0Icount = c0.Icount;
        ctx.DiskSender.AtPause(); // shared storage: the file as it is at C0 is what the destination replays on
        if (fallback != null)
        {
            _sinceC0 = machine.Memory.CreateDirtyClient("since-c0"); // tracks the pages written from now on
            _sinceC0.CollectAndClear(new List<int>()); // a new client starts all dirty
        }
        var header = new TraceHeader
        {
            FormatVersion = TraceFormat.CurrentVersion,
            Machine = new MachineConfigProto { MemorySize = machine.Config.MemorySize, RamBase = machine.Memory.Base, Isa = TraceHeaders.Isa, Harts = 1 },
            ImageName = ctx.Guest.ImageName,
            StartIcount = c0.Icount,
            StartDigest = c0.Digest,
            CheckpointReference = $"migration {ctx.Id} checkpoint C0 (sent as pages)",
            Recorder = "live",
            DigestInterval = DigestInterval,
            DiskImageDigest = c0.Disk is { } disk ? Guest.Devices.Virtio.Block.Disk.Identity(disk.BlockHashes) : 0,
        };
        var writer = new TraceWriter(Stream.Null, header, new TraceWriterOptions { FrameSink = OnLogFrame });
        var recorder = _recorder = new TraceRecorder(writer, new RecorderOptions { DigestInterval = DigestInterval, FlushInterval = TimeSpan.FromMilliseconds(10) });
        ctx.Guest.Port.Log = new RecorderLog(recorder, this);
        ctx.Guest.Resume();

        ctx.Pages.Send(conn, machine.Memory.PageCount, c0.Memory.IsZeroPage, c0.Memory.ReadPage, ByteCategory.Checkpoint, token,
            () => ctx.Fault(FaultPoint.Checkpoint));
        if (c0.Disk != null) ctx.DiskSender.Send(c0.Disk, token); // the only disk blocks log shipping sends: replay regenerates every later write
        conn.Send(new Envelope
        {
            CheckpointDone = new CheckpointDone { Icount = c0.Icount, DeviceState = ByteString.CopyFrom(c0.DeviceState), Digest = c0.Digest },
        }, ByteCategory.State, token);
        if (fallback != null) _retainedC0 = c0; // kept for a fallback to pre-copy
        else c0.Dispose(); // no more copy-on-write work for the guest
        _c0 = null;
        ctx.Times.CheckpointDone = ctx.Now;

        ctx.Phase = MigrationPhase.Log;
        if (!ShipLogUntilConverged(c0.Icount, token)) return null;
        CloseIn(token);
        ctx.Times.LogDone = ctx.Now;

        // Switchover: pause, log a digest at the pause icount (the destination's replayer checks it
        // there), flush the tail, stop recording, send the final state.
        switchover.Pause(proven: true, meanwhile: () => CloseIn(token));
        ctx.Throttle.Clear();
        ulong icount = machine.Icount;
        ulong digest = machine.ComputeDigest();
        recorder.Writer.StateDigest(icount, digest);
        recorder.Writer.FlushChunk(icount);
        SendLogFrames(token);
        switchover.SendFinalState(token, digest);
        StopLogging(); // after the final state went: the guest is paused, nothing more is logged
        return new SwitchoverPoint(icount, digest);
    }

    /// <summary>
    /// After <see cref="TryRun"/> returned null: the guest pauses, logging stops, and C0 with the pages
    /// written since it goes to the caller (pre-copy resumes the guest once it has them).
    /// </summary>
    public (MachineSnapshot C0, DirtyClient SinceC0) StopForFallback()
    {
        ctx.Guest.Pause();
        ctx.Throttle.Clear();
        StopLogging();
        while (_logFrames.TryDequeue(out _)) { }
        Interlocked.Exchange(ref _logQueuedBytes, 0);
        var handoff = (_retainedC0!, _sinceC0!);
        _retainedC0 = null;
        _sinceC0 = null;
        return handoff;
    }

    private void OnLogFrame(FrameInfo info, ReadOnlyMemory<byte> bytes)
    {
        _lastFrameTimestamp = Stopwatch.GetTimestamp();
        _logFrames.Enqueue(bytes.ToArray());
        Interlocked.Add(ref _logQueuedBytes, bytes.Length);
        _logReady.Set();
    }

    private void SendLogFrames(CancellationToken token)
    {
        while (_logFrames.TryDequeue(out var frame))
        {
            ctx.Conn!.Send(new Envelope { Log = new LogChunk { Frame = ByteString.CopyFrom(frame) } }, ByteCategory.Log, token);
            Interlocked.Add(ref _logQueuedBytes, -frame.Length);
            if (!_logFaultDone) { _logFaultDone = true; ctx.Fault(FaultPoint.Log); }
        }
    }

    /// <returns>False when the fallback rule said to fall back.</returns>
    private bool ShipLogUntilConverged(ulong c0Icount, CancellationToken token)
    {
        var machine = ctx.Guest.Machine;
        var replayPath = ctx.ReturnPath;
        double limit = ctx.DowntimeLimit;
        double start = ctx.Now, lastControl = ctx.Now, prevLag = double.MaxValue;
        var throttledAtStart = ctx.Throttle.HeldBack;
        bool converged = true;
        while (true)
        {
            token.ThrowIfCancellationRequested();
            SendLogFrames(token);
            ctx.Peer.Check(); // a stalled destination fails the migration here, long before any pause
            replayPath.Check(token); // nothing is expected on the return path now but Abort or a lost connection
            double now = ctx.Now;
            if (now - lastControl >= 0.05)
            {
                lastControl = now;
                ulong replay = replayPath.ReplayIcount;
                ulong source = machine.Icount;
                if (replay >= c0Icount && replay > 0)
                {
                    double rate = Math.Max(replayPath.ReplayMips, 1) * 1e6;
                    double lag = source > replay ? (source - replay) / rate : 0;
                    double wire = ctx.Conn!.Limiter is { } l ? Interlocked.Read(ref _logQueuedBytes) / (double)l.Rate : 0;
                    double tail = lag + wire;
                    if (tail <= limit) break;
                    bool outOfTime = now - start > MaxLogPhase.TotalSeconds;
                    if (fallback != null && fallback.ShouldFallBack(now, lag, limit, outOfTime, ThrottleCap, () => _sinceC0?.CountDirty() ?? 0)) { converged = false; break; }
                    if (outOfTime)
                    {
                        _convergenceNote = $"log shipping did not converge in {MaxLogPhase.TotalSeconds:F0} s (predicted tail {tail * 1000:F0} ms); switched over anyway";
                        break;
                    }
                    // Auto-converge: hold the guest back a little more while the lag does not shrink by 10 % a step.
                    if (lag > limit && lag > prevLag * 0.9 && now - start > 0.1)
                        ctx.Throttle.Set(Math.Min(ThrottleCap, ctx.Throttle.Value + 0.1));
                    prevLag = lag;
                }
            }
            _logReady.WaitOne(5);
        }
        double logSeconds = ctx.Now - start;
        if (logSeconds > 0)
            _measuredThrottle = (ctx.Throttle.HeldBack - throttledAtStart).TotalSeconds / logSeconds;
        return converged;
    }

    /// <summary>
    /// The tail fits the downtime limit; now make it as short as it can be before pausing: heartbeat
    /// frames every 0.2 ms let the replay follow closely, a CPU-bound guest is held back for a moment
    /// (at most <see cref="ApproachLimit"/>, within the throttle cap) so the replay closes the gap,
    /// and the guest pauses as soon as the replay is within <see cref="ApproachTailSeconds"/> of it.
    /// Replaying the tail and hashing what it wrote is what the destination does in the downtime.
    /// </summary>
    private void ApproachSwitchover(CancellationToken token)
    {
        var machine = ctx.Guest.Machine;
        var throttle = ctx.Throttle;
        _approach = true;
        double throttleBefore = throttle.Value;
        double start = ctx.Now;
        try
        {
            while (ctx.Now - start < ApproachLimit.TotalSeconds)
            {
                token.ThrowIfCancellationRequested();
                SendLogFrames(token);
                ctx.Peer.Check();
                ulong replay = ctx.ReturnPath.ReplayIcount, source = machine.Icount;
                double rate = Math.Max(ctx.ReturnPath.ReplayMips, 1) * 1e6;
                if (source <= replay || (source - replay) / rate <= ApproachTailSeconds) break;
                // Behind: hold a guest that outruns the replay back (an idle one never gets here).
                if (ctx.Now - start > 0.002 && throttle.Value < ApproachThrottle) throttle.Set(Math.Min(ApproachThrottle, Math.Max(throttle.Value, ThrottleCap)));
                _logReady.WaitOne(1);
            }
        }
        finally { _approach = false; }
        ctx.Log($"final approach {(ctx.Now - start) * 1000:F1} ms (throttle {throttleBefore:P0} -> {throttle.Value:P0}); replay {machine.Icount - Math.Min(machine.Icount, ctx.ReturnPath.ReplayIcount):N0} instructions behind");
    }

    /// <summary>
    /// Right before the pause: the final approach, then the guest thread hashes its memory once more
    /// while it still runs and the replay verifies that digest, so both digests at the pause cover
    /// only the pages written in the last moment (downtime follows it).
    /// </summary>
    private void CloseIn(CancellationToken token)
    {
        ApproachSwitchover(token);
        _digestRequest.Reset();
        _wantDigest = true;
        bool hashed = _digestRequest.Wait(TimeSpan.FromMilliseconds(10)); // an idle guest may not poll soon: the pause's digest covers it
        _wantDigest = false;
        if (hashed) AwaitReplayPast(_preDigestIcount, token);
    }

    /// <summary>
    /// Lets the replay verify the digest logged at <paramref name="icount"/> while the guest still runs:
    /// the destination then hashes at the switchover only what the source hashes there too, the pages
    /// written since (on a guest that writes everywhere that is most of the destination's downtime).
    /// </summary>
    private void AwaitReplayPast(ulong icount, CancellationToken token)
    {
        _approach = true; // heartbeats every 0.2 ms carry the digest out at once
        double start = ctx.Now;
        try
        {
            while (ctx.ReturnPath.ReplayIcount < icount && ctx.Now - start < PreDigestWait.TotalSeconds)
            {
                token.ThrowIfCancellationRequested();
                SendLogFrames(token);
                ctx.Peer.Check();
                _logReady.WaitOne(1);
            }
        }
        finally { _approach = false; }
    }

    private void StopLogging()
    {
        ctx.Guest.Port.Log = null;
        _recorder?.Dispose();
        _recorder = null;
        _c0?.Dispose();
        _c0 = null;
    }

    public void Release()
    {
        StopLogging();
        _sinceC0?.Release();
        _sinceC0 = null;
        _retainedC0?.Dispose();
        _retainedC0 = null;
    }

    public void FillReport(MigrationReport r)
    {
        r.MeanThrottle = _measuredThrottle; // wall time the guest was actually held back during the log phase
        if (_convergenceNote != null) r.Error = _convergenceNote;
    }

    public void FillProgress(MigrationProgress p) { }

    /// <summary>The port's input log, written into the trace recorder (on the guest's thread).</summary>
    private sealed class RecorderLog(TraceRecorder recorder, LogShippingSource owner) : IInputLog
    {
        public void OnPoll(Machine machine)
        {
            recorder.OnPoll(machine);
            if (owner._wantDigest)
            {
                owner._wantDigest = false;
                recorder.Writer.StateDigest(machine.Icount, machine.ComputeDigest());
                owner._preDigestIcount = machine.Icount;
                owner._digestRequest.Set();
            }
            if (Stopwatch.GetTimestamp() - owner._lastFrameTimestamp > (owner._approach ? ApproachHeartbeatTicks : HeartbeatTicks))
                recorder.Writer.Heartbeat(machine.Icount);
        }

        public void TimeDelivered(Machine machine, ulong time) => recorder.TimeDelivered(machine, time);
        public void TimeRead(Machine machine, ulong time) => recorder.TimeRead(machine, time);
        public void SerialInput(Machine machine, ReadOnlySpan<byte> data) => recorder.SerialInput(machine, data);
        public void Entropy(Machine machine, ushort value) => recorder.Entropy(machine, value);
        public void BlockCompletion(Machine machine, int count) => recorder.BlockCompletion(machine, count);
    }
}
