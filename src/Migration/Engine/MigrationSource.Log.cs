using System.Collections.Concurrent;
using Google.Protobuf;
using LiveMigration.Guest;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
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
/// guest that outruns the replay is throttled step by step until the lag shrinks.
/// </summary>
internal sealed partial class MigrationSource
{
    /// <summary>Give up converging after this long and switch over with whatever tail is left.</summary>
    private static readonly TimeSpan MaxLogPhase = TimeSpan.FromSeconds(30);
    private const ulong DigestInterval = 1UL << 27;

    private MachineSnapshot? _c0;
    private TraceRecorder? _recorder;
    private readonly ConcurrentQueue<byte[]> _logFrames = new();
    private readonly AutoResetEvent _logReady = new(false);
    private long _logQueuedBytes;
    private bool _logFaultDone;
    private string? _convergenceNote;

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    private (ulong Icount, ulong Digest) LogShipping(CancellationToken token)
    {
        var machine = _guest.Machine;
        var conn = _conn!;
        _phase = MigrationPhase.Checkpoint;

        // C0: stop for an instant so the snapshot and the first logged input share one icount.
        _guest.Pause();
        _c0 = machine.TakeSnapshot();
        _c0Icount = _c0.Icount;
        if (Strategy == Strategy.Auto) StartFallbackTracking();
        var header = new TraceHeader
        {
            FormatVersion = TraceFormat.CurrentVersion,
            Machine = new MachineConfigProto { MemorySize = machine.Config.MemorySize, RamBase = machine.Memory.Base, Isa = TraceHeaders.Isa, Harts = 1 },
            ImageName = _guest.ImageName,
            StartIcount = _c0.Icount,
            StartDigest = _c0.Digest,
            CheckpointReference = $"migration {Id} checkpoint C0 (sent as pages)",
            Recorder = "live",
            DigestInterval = DigestInterval,
        };
        var writer = new TraceWriter(Stream.Null, header, new TraceWriterOptions { FrameSink = OnLogFrame });
        _recorder = new TraceRecorder(writer, new RecorderOptions { DigestInterval = DigestInterval, FlushInterval = TimeSpan.FromMilliseconds(10) });
        _guest.Port.Log = new RecorderLog(_recorder, this);
        _guest.Resume();

        var c0 = _c0;
        _pages.Send(conn, machine.Memory.PageCount, c0.Memory.IsZeroPage, c0.Memory.ReadPage, ByteCategory.Checkpoint, token,
            () => Fault(FaultPoint.Checkpoint));
        conn.Send(new Envelope
        {
            CheckpointDone = new CheckpointDone { Icount = c0.Icount, DeviceState = ByteString.CopyFrom(c0.DeviceState), Digest = c0.Digest },
        }, ByteCategory.State, token);
        if (Strategy == Strategy.Auto) _retainedC0 = c0; // kept for a fallback to pre-copy
        else c0.Dispose(); // no more copy-on-write work for the guest
        _c0 = null;
        _tCheckpointDone = Now;

        _phase = MigrationPhase.Log;
        ShipLogUntilConverged(c0.Icount, token);
        if (_fallbackReason != null) return FallBackToPrecopy(token);
        ApproachSwitchover(token);
        _tLogDone = Now;

        // Have the guest thread hash its memory once more while it still runs, so the digest at the
        // pause covers only the pages written in the last moment (downtime follows it).
        _digestRequest.Reset();
        _wantDigest = true;
        _digestRequest.Wait(TimeSpan.FromMilliseconds(10)); // an idle guest may not poll soon: the pause's digest covers it
        _wantDigest = false;

        // Switchover: pause, log a digest at the pause icount (the destination's replayer checks it
        // there), flush the tail, stop recording, send the final state.
        Pause(proven: true);
        _guest.Port.Throttle = 0;
        _throttle = 0;
        ulong icount = machine.Icount;
        ulong digest = machine.ComputeDigest();
        _recorder.Writer.StateDigest(icount, digest);
        _recorder.Writer.FlushChunk(icount);
        SendLogFrames(token);
        SendFinalState(token, digest);
        StopLogging(); // after the final state went: the guest is paused, nothing more is logged
        return (icount, digest);
    }

    private long _lastFrameTimestamp;
    private volatile bool _wantDigest;
    private readonly ManualResetEventSlim _digestRequest = new();

    private void OnLogFrame(FrameInfo info, ReadOnlyMemory<byte> bytes)
    {
        _lastFrameTimestamp = System.Diagnostics.Stopwatch.GetTimestamp();
        _logFrames.Enqueue(bytes.ToArray());
        Interlocked.Add(ref _logQueuedBytes, bytes.Length);
        _logReady.Set();
    }

    private void SendLogFrames(CancellationToken token)
    {
        while (_logFrames.TryDequeue(out var frame))
        {
            _conn!.Send(new Envelope { Log = new LogChunk { Frame = ByteString.CopyFrom(frame) } }, ByteCategory.Log, token);
            Interlocked.Add(ref _logQueuedBytes, -frame.Length);
            if (!_logFaultDone) { _logFaultDone = true; Fault(FaultPoint.Log); }
        }
    }

    private void ShipLogUntilConverged(ulong c0Icount, CancellationToken token)
    {
        var machine = _guest.Machine;
        double limit = Math.Max(1, _command.DowntimeLimitMs == 0 ? 10 : _command.DowntimeLimitMs) / 1000.0;
        double start = Now, lastControl = Now, prevLag = double.MaxValue;
        long throttledAtStart = _guest.Port.ThrottledTime.Ticks;
        while (true)
        {
            token.ThrowIfCancellationRequested();
            SendLogFrames(token);
            _peer.Check(); // a stalled destination fails the migration here, long before any pause
            if (_inbox.TryTake(out var e)) // nothing is expected on the return path now but Abort or a lost connection
            {
                _inbox.Add(e);
                Expect(Envelope.BodyOneofCase.Ack, TimeSpan.Zero, token); // throws the right error
            }
            double now = Now;
            if (now - lastControl >= 0.05)
            {
                lastControl = now;
                ulong replay = (ulong)Interlocked.Read(ref _replayIcount);
                ulong source = machine.Icount;
                if (replay >= c0Icount && replay > 0)
                {
                    double rate = Math.Max(_replayMips, 1) * 1e6;
                    double lag = source > replay ? (source - replay) / rate : 0;
                    double wire = _conn!.Limiter is { } l ? Interlocked.Read(ref _logQueuedBytes) / (double)l.Rate : 0;
                    double tail = lag + wire;
                    if (tail <= limit) break;
                    if (ShouldFallBack(now, lag, limit, now - start > MaxLogPhase.TotalSeconds)) break;
                    if (now - start > MaxLogPhase.TotalSeconds)
                    {
                        _convergenceNote = $"log shipping did not converge in {MaxLogPhase.TotalSeconds:F0} s (predicted tail {tail * 1000:F0} ms); switched over anyway";
                        break;
                    }
                    // Auto-converge: hold the guest back a little more while the lag does not shrink by 10 % a step.
                    if (lag > limit && lag > prevLag * 0.9 && now - start > 0.1)
                        SetThrottle(Math.Min(LogThrottleCap, _throttle + 0.1));
                    prevLag = lag;
                }
            }
            _logReady.WaitOne(5);
        }
        double logSeconds = Now - start;
        if (logSeconds > 0)
            _measuredThrottle = (_guest.Port.ThrottledTime.Ticks - throttledAtStart) / (double)TimeSpan.TicksPerSecond / logSeconds;
    }

    private double _measuredThrottle;

    /// <summary>How long the final approach may take before the switchover goes ahead anyway.</summary>
    private static readonly TimeSpan ApproachLimit = TimeSpan.FromMilliseconds(150);
    /// <summary>The tail the final approach aims at: replaying it is the bulk of log shipping's downtime.</summary>
    private const double ApproachTailSeconds = 0.0002;
    private const double ApproachThrottle = 0.9;

    /// <summary>
    /// The tail fits the downtime limit; now make it as short as it can be before pausing: heartbeat
    /// frames every 0.2 ms let the replay follow closely, a CPU-bound guest is held back for a moment
    /// (at most <see cref="ApproachLimit"/>, within the throttle cap) so the replay closes the gap,
    /// and the guest pauses as soon as the replay is within <see cref="ApproachTailSeconds"/> of it.
    /// Replaying the tail and hashing what it wrote is what the destination does in the downtime.
    /// </summary>
    private void ApproachSwitchover(CancellationToken token)
    {
        var machine = _guest.Machine;
        _approach = true;
        double throttleBefore = _throttle;
        double start = Now;
        try
        {
            while (Now - start < ApproachLimit.TotalSeconds)
            {
                token.ThrowIfCancellationRequested();
                SendLogFrames(token);
                _peer.Check();
                ulong replay = (ulong)Interlocked.Read(ref _replayIcount), source = machine.Icount;
                double rate = Math.Max(_replayMips, 1) * 1e6;
                if (source <= replay || (source - replay) / rate <= ApproachTailSeconds) break;
                // Behind: hold a guest that outruns the replay back (an idle one never gets here).
                if (Now - start > 0.002 && _throttle < ApproachThrottle) SetThrottle(Math.Min(ApproachThrottle, Math.Max(_throttle, LogThrottleCap)));
                _logReady.WaitOne(1);
            }
        }
        finally { _approach = false; }
        _host.Log($"migration {Id}: final approach {(Now - start) * 1000:F1} ms (throttle {throttleBefore:P0} -> {_throttle:P0}); replay {machine.Icount - Math.Min(machine.Icount, (ulong)Interlocked.Read(ref _replayIcount)):N0} instructions behind");
    }

    private volatile bool _approach;
    private static readonly long ApproachHeartbeatTicks = System.Diagnostics.Stopwatch.Frequency / 5000;

    private void SetThrottle(double value)
    {
        _throttle = value;
        _guest.Port.Throttle = value;
        _maxThrottle = Math.Max(_maxThrottle, value);
    }

    private void StopLogging()
    {
        _guest.Port.Log = null;
        _recorder?.Dispose();
        _c0?.Dispose();
        _c0 = null;
    }

    /// <summary>Instructions may run without any input; a heartbeat frame this often lets the replay follow them.</summary>
    private static readonly long HeartbeatTicks = System.Diagnostics.Stopwatch.Frequency / 200;

    /// <summary>The port's input log, written into the trace recorder (on the guest's thread).</summary>
    private sealed class RecorderLog(TraceRecorder recorder, MigrationSource owner) : IInputLog
    {
        public void OnPoll(Machine machine)
        {
            recorder.OnPoll(machine);
            if (owner._wantDigest)
            {
                owner._wantDigest = false;
                recorder.Writer.StateDigest(machine.Icount, machine.ComputeDigest());
                owner._digestRequest.Set();
            }
            if (System.Diagnostics.Stopwatch.GetTimestamp() - owner._lastFrameTimestamp > (owner._approach ? ApproachHeartbeatTicks : HeartbeatTicks))
                recorder.Writer.Heartbeat(machine.Icount);
        }

        public void TimeDelivered(Machine machine, ulong time) => recorder.TimeDelivered(machine, time);
        public void TimeRead(Machine machine, ulong time) => recorder.TimeRead(machine, time);
        public void SerialInput(Machine machine, ReadOnlySpan<byte> data) => recorder.SerialInput(machine, data);
        public void Entropy(Machine machine, ushort value) => recorder.Entropy(machine, value);
        public void BlockCompletion(Machine machine, int count) => recorder.BlockCompletion(machine, count);
    }
}
