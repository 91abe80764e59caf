using System.Buffers;
using Google.Protobuf;
using LiveMigration.Trace.Compression;
using LiveMigration.Trace.Schema;

namespace LiveMigration.Trace;

public sealed class TraceWriterOptions
{
    /// <summary>Raw event bytes after which a chunk is closed and written.</summary>
    public int ChunkSize { get; init; } = TraceFormat.DefaultChunkSize;
    public int CompressionLevel { get; init; } = Zstd.DefaultLevel;
    /// <summary>Called with every whole frame right after it is written (e.g. a migration source shipping chunks).</summary>
    public Action<FrameInfo, ReadOnlyMemory<byte>>? FrameSink { get; init; }
    /// <summary>Format version to write: only tests and the golden-trace generator write an older one.</summary>
    internal uint FormatVersion { get; init; } = TraceFormat.CurrentVersion;
}

/// <summary>
/// Writes a trace to any stream: magic, header frame, then events chunks (and checkpoint frames) as
/// they fill, then the index and end frames on <see cref="Finish"/>. Every frame is written with one
/// Write and flushed, so a killed writer leaves a trace readable up to its last whole frame.
/// Logging an event only appends to a pooled buffer.
/// </summary>
public sealed class TraceWriter : IDisposable
{
    private readonly Stream _out;
    private readonly TraceWriterOptions _options;
    private readonly EventChunkWriter _chunk = new();
    private readonly List<FrameInfo> _frames = [];
    private ulong _checkpoints;
    private bool _finished;

    public TraceWriter(Stream output, TraceHeader header, TraceWriterOptions? options = null)
    {
        _out = output;
        _options = options ?? new TraceWriterOptions();
        header = header.Clone();
        header.FormatVersion = _options.FormatVersion;
        if (_options.FormatVersion < 2) { header.DigestInterval = 0; header.CheckpointInterval = 0; }
        if (_options.FormatVersion < TraceFormat.DiskVersion && header.DiskImageDigest != 0)
            throw new ArgumentException($"trace format version {_options.FormatVersion} cannot record a drive (version {TraceFormat.DiskVersion} and later can)");
        Header = header;
        _out.Write(TraceFormat.Magic);
        BytesWritten = TraceFormat.Magic.Length;
        WriteFrame(FrameKind.Header, header.ToByteArray(), header.StartIcount, header.StartIcount, compress: false);
    }

    public TraceHeader Header { get; }
    public long BytesWritten { get; private set; }
    public long EventCount { get; private set; }
    public IReadOnlyList<FrameInfo> Frames => _frames;
    /// <summary>Icount of the last event logged (or of the header's start).</summary>
    public ulong LastIcount => _chunk.IsEmpty ? _lastFlushedIcount : _chunk.LastIcount;
    private ulong _lastFlushedIcount;

    public void TimeDelivered(ulong icount, ulong time) { _chunk.TimeDelivered(icount, time); Logged(icount); }
    public void TimeRead(ulong icount, ulong time) { _chunk.TimeRead(icount, time); Logged(icount); }
    public void SerialInput(ulong icount, ReadOnlySpan<byte> data) { if (data.IsEmpty) return; _chunk.SerialInput(icount, data); Logged(icount); }
    public void Entropy(ulong icount, ushort value) { _chunk.Entropy(icount, value); Logged(icount); }
    public void BlockCompletion(ulong icount, int count)
    {
        if (_options.FormatVersion < TraceFormat.DiskVersion) throw new InvalidOperationException($"trace format version {_options.FormatVersion} has no block-completion event");
        _chunk.BlockCompletion(icount, count);
        Logged(icount);
    }
    public void StateDigest(ulong icount, ulong digest) { _chunk.StateDigest(icount, digest); Logged(icount); }

    private void Logged(ulong icount)
    {
        EventCount++;
        if (_chunk.Length >= _options.ChunkSize) FlushChunk(icount);
    }

    /// <summary>
    /// Writes the pending events as one chunk. <paramref name="horizon"/> promises that no later event
    /// has an icount below it, so a reader may run the machine up to it.
    /// </summary>
    public void FlushChunk(ulong horizon)
    {
        ThrowIfFinished();
        if (_chunk.IsEmpty) return;
        if (horizon < _chunk.LastIcount) horizon = _chunk.LastIcount;
        WriteFrame(FrameKind.Events, _chunk.Payload, _chunk.FirstIcount, horizon, compress: true);
        _lastFlushedIcount = _chunk.LastIcount;
        _chunk.Clear();
    }

    /// <summary>
    /// Promises a live reader that no event below <paramref name="horizon"/> will follow: flushes the
    /// pending events, or writes an empty events frame when there are none (a guest that takes no
    /// input for a while). A migration destination's replay may then run up to the horizon.
    /// </summary>
    public void Heartbeat(ulong horizon)
    {
        ThrowIfFinished();
        if (!_chunk.IsEmpty) { FlushChunk(horizon); return; }
        if (horizon < _lastFlushedIcount) horizon = _lastFlushedIcount;
        WriteFrame(FrameKind.Events, ReadOnlySpan<byte>.Empty, horizon, horizon, compress: false);
    }

    /// Starts an asynchronous checkpoint: logs its marker at <paramref name="icount"/> and closes the chunk.
    /// Until <see cref="CompleteCheckpoint"/> hands over the checkpoint bytes, later frames are held in
    /// memory, so the file keeps the layout of <see cref="Checkpoint"/> (marker chunk, checkpoint frame,
    /// later chunks) while the guest runs on. One checkpoint may be in flight at a time.
    /// </summary>
    public void BeginCheckpoint(ulong icount)
    {
        ThrowIfFinished();
        if (CheckpointInFlight) throw new InvalidOperationException("a checkpoint is already in flight");
        _chunk.CheckpointMarker(icount, ++_checkpoints);
        EventCount++;
        FlushChunk(icount);
        _inFlightIcount = icount;
        CheckpointInFlight = true;
    }

    /// <summary>Writes the checkpoint begun by <see cref="BeginCheckpoint"/>, then the frames held back meanwhile.</summary>
    public void CompleteCheckpoint(ReadOnlySpan<byte> checkpointFile)
    {
        if (!CheckpointInFlight) throw new InvalidOperationException("no checkpoint in flight");
        CheckpointInFlight = false;
        WriteFrame(FrameKind.Checkpoint, checkpointFile, _inFlightIcount, _inFlightIcount, compress: false);
        while (_heldBack.TryDequeue(out var f)) WriteFrame(f.Kind, f.Raw, f.First, f.End, f.Compress);
    }

    public bool CheckpointInFlight { get; private set; }
    private ulong _inFlightIcount;
    private readonly Queue<(FrameKind Kind, byte[] Raw, ulong First, ulong End, bool Compress)> _heldBack = new();

    /// <summary>
    /// Logs a checkpoint marker at <paramref name="icount"/>, closes the chunk and writes the checkpoint
    /// (a whole checkpoint file, see <see cref="CheckpointFile"/>) as its own frame. The checkpoint must
    /// hold the state before any input at <paramref name="icount"/> that is logged after this call.
    /// </summary>
    public void Checkpoint(ulong icount, ReadOnlySpan<byte> checkpointFile)
    {
        BeginCheckpoint(icount);
        CompleteCheckpoint(checkpointFile);
    }

    /// <summary>Logs the end event, writes the last chunk, the index and the end marker.</summary>
    public void Finish(ulong icount, EndReason reason, long exitCode)
    {
        ThrowIfFinished();
        if (CheckpointInFlight) throw new InvalidOperationException("complete the checkpoint in flight before finishing");
        _chunk.End(icount, reason, exitCode);
        EventCount++;
        FlushChunk(icount);
        long indexOffset = BytesWritten;
        var index = EncodeIndex(_frames);
        WriteFrame(FrameKind.Index, index, Header.StartIcount, icount, compress: true);
        Span<byte> end = stackalloc byte[TraceFormat.EndPayloadSize];
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(end, indexOffset);
        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(end[8..], icount);
        WriteFrame(FrameKind.End, end, icount, icount, compress: false);
        _finished = true;
    }

    public bool IsFinished => _finished;

    internal static byte[] EncodeIndex(IReadOnlyList<FrameInfo> frames)
    {
        var buf = new byte[Varint.MaxLength * (1 + frames.Count * 6)];
        int n = Varint.Write(buf, (ulong)frames.Count);
        long prev = 0;
        foreach (var f in frames)
        {
            n += Varint.Write(buf.AsSpan(n), (ulong)(f.Offset - prev));
            prev = f.Offset;
            n += Varint.Write(buf.AsSpan(n), (ulong)f.Kind);
            n += Varint.Write(buf.AsSpan(n), (ulong)f.StoredLength);
            n += Varint.Write(buf.AsSpan(n), (ulong)f.RawLength);
            n += Varint.Write(buf.AsSpan(n), f.FirstIcount);
            n += Varint.Write(buf.AsSpan(n), f.EndIcount - f.FirstIcount);
        }
        return buf.AsSpan(0, n).ToArray();
    }

    private void WriteFrame(FrameKind kind, ReadOnlySpan<byte> raw, ulong first, ulong end, bool compress)
    {
        if (CheckpointInFlight) { _heldBack.Enqueue((kind, raw.ToArray(), first, end, compress)); return; }
        int capacity = TraceFormat.FrameHeaderSize + (compress ? Zstd.CompressBound(raw.Length) : raw.Length);
        byte[] buf = ArrayPool<byte>.Shared.Rent(capacity);
        try
        {
            int stored;
            if (compress) stored = Zstd.Compress(raw, buf.AsSpan(TraceFormat.FrameHeaderSize), _options.CompressionLevel);
            else { raw.CopyTo(buf.AsSpan(TraceFormat.FrameHeaderSize)); stored = raw.Length; }
            var flags = compress ? FrameFlags.Zstd : FrameFlags.None;
            ushort sequence = _options.FormatVersion >= 2 ? (ushort)_frames.Count : (ushort)0;
            var h = new FrameHeader(kind, flags, stored, raw.Length, first, end, 0, sequence);
            h.Write(buf);
            ulong sum = FrameHeader.ComputeChecksum(buf, buf.AsSpan(TraceFormat.FrameHeaderSize, stored));
            (h with { Checksum = sum }).Write(buf);
            int total = TraceFormat.FrameHeaderSize + stored;
            var info = new FrameInfo(BytesWritten, kind, stored, raw.Length, first, end, _frames.Count);
            _out.Write(buf, 0, total);
            _out.Flush();
            BytesWritten += total;
            _frames.Add(info);
            _options.FrameSink?.Invoke(info, buf.AsMemory(0, total));
        }
        finally { ArrayPool<byte>.Shared.Return(buf); }
    }

    private void ThrowIfFinished()
    {
        if (_finished) throw new InvalidOperationException("the trace is already finished");
    }

    /// <summary>Releases buffers. An unfinished trace stays readable up to its last whole frame.</summary>
    public void Dispose() => _chunk.Dispose();
}
