using LiveMigration.Guest;
using LiveMigration.Trace;

namespace LiveMigration.Recorder;

public sealed record RecorderOptions
{
    /// <summary>Instructions between state-digest events (at the first poll past each multiple).</summary>
    public ulong DigestInterval { get; init; } = 1UL << 24;
    /// <summary>Instructions between checkpoint frames; 0 for none.</summary>
    public ulong CheckpointInterval { get; init; }
    /// <summary>
    /// Serialize and compress checkpoints on a worker thread from a copy-on-write snapshot while the guest
    /// runs on (the trace's bytes are the same either way).
    /// </summary>
    public bool BackgroundCheckpoints { get; init; } = true;
    /// <summary>Wall time after which a non-empty chunk is written even if not full; null never (deterministic output).</summary>
    public TimeSpan? FlushInterval { get; init; } = TimeSpan.FromMilliseconds(500);
}

/// <summary>
/// The logging half of a recording host port: every input with its icount, digests and checkpoints
/// on schedule, and the end marker. A port calls it at each place an input enters the machine.
/// Logging appends to a pooled buffer; only digests (O(dirty pages)) and chunk writes cost more.
/// </summary>
public sealed class TraceRecorder : IInputLog, IDisposable
{
    private readonly RecorderOptions _options;
    private readonly long _flushTicks;
    private ulong _nextDigest;
    private ulong _nextCheckpoint;
    private long _lastFlush = Environment.TickCount64;

    public TraceRecorder(TraceWriter writer, RecorderOptions options)
    {
        Writer = writer;
        _options = options;
        _flushTicks = options.FlushInterval is { } f ? (long)f.TotalMilliseconds : long.MaxValue;
        ulong start = writer.Header.StartIcount;
        _nextDigest = options.DigestInterval == 0 ? ulong.MaxValue : start + options.DigestInterval;
        _nextCheckpoint = options.CheckpointInterval == 0 ? ulong.MaxValue : start + options.CheckpointInterval;
    }

    /// <summary>Starts a trace of <paramref name="machine"/> as it is now (its state becomes the initial checkpoint).</summary>
    public static TraceRecorder Start(Stream output, Machine machine, ReadOnlySpan<byte> image, string imageName, string recorderKind,
        RecorderOptions options, TraceWriterOptions? writerOptions = null)
    {
        var header = TraceHeaders.Create(machine, image, imageName, recorderKind, options.DigestInterval, options.CheckpointInterval);
        return new TraceRecorder(new TraceWriter(output, header, writerOptions), options);
    }

    public TraceWriter Writer { get; }

    private volatile bool _flushRequested;

    /// <summary>
    /// Asks for the pending events to be written as a chunk at the next poll (any thread): a migration
    /// source calls it to bound the destination's lag without waiting for a full chunk.
    /// </summary>
    public void RequestFlush() => _flushRequested = true;

    /// <summary>At the top of a poll, before the poll's inputs: digest and checkpoint when due.</summary>
    public void OnPoll(Machine machine)
    {
        ulong icount = machine.Icount;
        if (_flushRequested)
        {
            _flushRequested = false;
            Writer.FlushChunk(icount);
        }
        if (icount >= _nextDigest)
        {
            Writer.StateDigest(icount, machine.ComputeDigest());
            _nextDigest = icount + _options.DigestInterval;
        }
        if (_pending is { IsCompleted: true }) CompletePending();
        if (icount >= _nextCheckpoint)
        {
            if (_pending != null) CompletePending(); // at most one in flight: wait for the previous one
            if (_options.BackgroundCheckpoints)
            {
                var snapshot = machine.TakeSnapshot();
                var config = machine.Config;
                Writer.BeginCheckpoint(icount);
                _pending = Task.Run(() =>
                {
                    using (snapshot) return CheckpointFile.Create(snapshot, config);
                });
            }
            else Writer.Checkpoint(icount, CheckpointFile.Create(machine));
            _nextCheckpoint = icount + _options.CheckpointInterval;
            _lastFlush = Environment.TickCount64;
        }
        MaybeFlush(icount);
    }

    private Task<byte[]>? _pending;

    private void CompletePending()
    {
        var bytes = _pending!.GetAwaiter().GetResult();
        _pending = null;
        Writer.CompleteCheckpoint(bytes);
    }

    public void TimeDelivered(Machine machine, ulong time) { Writer.TimeDelivered(machine.Icount, time); MaybeFlush(machine.Icount); }
    public void TimeRead(Machine machine, ulong time) => Writer.TimeRead(machine.Icount, time);
    public void SerialInput(Machine machine, ReadOnlySpan<byte> data) { Writer.SerialInput(machine.Icount, data); MaybeFlush(machine.Icount); }
    public void Entropy(Machine machine, ushort value) => Writer.Entropy(machine.Icount, value);
    public void BlockCompletion(Machine machine, int count) { Writer.BlockCompletion(machine.Icount, count); MaybeFlush(machine.Icount); }

    private void MaybeFlush(ulong icount)
    {
        if (_flushTicks == long.MaxValue) return;
        long now = Environment.TickCount64;
        if (now - _lastFlush < _flushTicks) return;
        _lastFlush = now;
        Writer.FlushChunk(icount);
    }

    /// <summary>Logs the final digest and the end of the recording, then the index and end marker.</summary>
    public void Finish(Machine machine, StopReason reason)
    {
        if (_pending != null) CompletePending();
        Writer.StateDigest(machine.Icount, machine.ComputeDigest());
        var end = reason switch
        {
            StopReason.Exited => EndReason.Exited,
            StopReason.InstructionLimit => EndReason.InstructionLimit,
            StopReason.Idle => EndReason.Idle,
            _ => EndReason.StopRequested,
        };
        Writer.Finish(machine.Icount, end, machine.ExitCode ?? 0);
    }

    public void Dispose()
    {
        // The worker reads guest RAM through its snapshot: let it finish before the caller frees the machine.
        ((IAsyncResult?)_pending)?.AsyncWaitHandle.WaitOne();
        Writer.Dispose();
    }
}
