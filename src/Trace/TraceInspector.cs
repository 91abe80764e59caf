using LiveMigration.Guest;
using LiveMigration.Trace.Schema;

namespace LiveMigration.Trace;

/// <summary>What `lm trace info` shows.</summary>
public sealed class TraceSummary
{
    public required TraceHeader Header { get; init; }
    public long FileBytes { get; init; }
    public bool Complete { get; init; }
    public string? Truncation { get; init; }
    public ulong StartIcount { get; init; }
    public ulong FinalIcount { get; set; }
    /// <summary>Guest time covered (first to last logged time value), in 10 MHz ticks.</summary>
    public ulong TimeSpanTicks { get; set; }
    public long[] EventsByKind { get; } = new long[8];
    /// <summary>Encoded (uncompressed) bytes of events by kind.</summary>
    public long[] EventBytesByKind { get; } = new long[8];
    /// <summary>Frames, stored bytes (on disk, with headers) and raw payload bytes by frame kind.</summary>
    public long[] FramesByKind { get; } = new long[6];
    public long[] StoredBytesByFrameKind { get; } = new long[6];
    public long[] RawBytesByFrameKind { get; } = new long[6];
    public List<(ulong Icount, long Bytes, long Offset)> Checkpoints { get; } = [];
    public long EventCount => EventsByKind.Sum();
    /// <summary>Raw event bytes over stored events-frame bytes.</summary>
    public double CompressionRatio => StoredBytesByFrameKind[(int)FrameKind.Events] == 0 ? 1
        : (double)RawBytesByFrameKind[(int)FrameKind.Events] / StoredBytesByFrameKind[(int)FrameKind.Events];
}

/// <summary>Reads a whole trace without executing it: statistics and structural verification.</summary>
public static class TraceInspector
{
    /// <summary>
    /// Decodes every frame and event and checks the structure: checksums, frame order, event icounts
    /// never going back, checkpoint files intact, index matching the frames, exactly one end event
    /// as the last event. Throws <see cref="TraceFormatException"/> at the first problem (a truncated
    /// trace throws <see cref="TraceTruncatedException"/> after everything before it checked out).
    /// </summary>
    public static TraceSummary Verify(Stream stream) => Walk(stream, strict: true);

    /// <summary>Like <see cref="Verify"/> but a truncated trace is summarized up to its last whole frame.</summary>
    public static TraceSummary Summarize(Stream stream) => Walk(stream, strict: false);

    private static TraceSummary Walk(Stream stream, bool strict)
    {
        using var file = TraceFile.Open(stream, useIndex: false);
        var s = new TraceSummary
        {
            Header = file.Header,
            FileBytes = file.Length,
            Complete = file.IsComplete,
            Truncation = file.Truncation?.Message,
            StartIcount = file.Header.StartIcount,
            FinalIcount = file.FinalIcount,
        };
        if (!file.Header.InitialCheckpoint.IsEmpty)
        {
            var info = CheckpointFile.ReadInfo(file.Header.InitialCheckpoint.Span);
            if (info.Icount != file.Header.StartIcount || info.Digest != file.Header.StartDigest)
                throw new TraceFormatException(file.Frames[0].Offset, "header's initial checkpoint does not match its start icount/digest");
            if (strict) CheckRestores(file.Header.InitialCheckpoint.Span, file.Header.Machine.MemorySize, file.Frames[0].Offset, "initial checkpoint");
        }
        ulong last = file.Header.StartIcount;
        bool ended = false, anyTime = false;
        ulong firstTime = 0, lastTime = 0;
        TraceFrame? indexFrame = null;
        foreach (var info in file.Frames)
        {
            s.FramesByKind[(int)info.Kind]++;
            s.StoredBytesByFrameKind[(int)info.Kind] += info.StoredLength + TraceFormat.FrameHeaderSize;
            s.RawBytesByFrameKind[(int)info.Kind] += info.RawLength;
            if (info.Kind == FrameKind.Header) continue;
            var frame = file.ReadFrame(info);
            if (ended && info.Kind is FrameKind.Events or FrameKind.Checkpoint)
                throw new TraceFormatException(info.Offset, $"{info.Kind} frame after the end event");
            switch (info.Kind)
            {
                case FrameKind.Events:
                    if (info.FirstIcount < last) throw new TraceFormatException(info.Offset, $"events frame starts at icount {info.FirstIcount}, before the previous event at {last}");
                    var r = frame.Events();
                    int pos = 0;
                    while (r.TryRead(out var e))
                    {
                        if (ended) throw new TraceFormatException(info.Offset, "events after the end event");
                        if (e.Icount > info.EndIcount) throw new TraceFormatException(info.Offset, $"event at icount {e.Icount} beyond the frame's end icount {info.EndIcount}");
                        int now = frame.Payload.Length - r.Remaining;
                        s.EventsByKind[(int)e.Kind]++;
                        s.EventBytesByKind[(int)e.Kind] += now - pos;
                        pos = now;
                        last = e.Icount;
                        if (e.Kind is EventKind.TimeDelivered or EventKind.TimeRead)
                        {
                            if (!anyTime) { firstTime = e.Value; anyTime = true; }
                            lastTime = e.Value;
                        }
                        if (e.Kind == EventKind.End) ended = true;
                    }
                    break;
                case FrameKind.Checkpoint:
                    var cp = CheckpointFile.ReadInfo(frame.Payload.Span);
                    if (strict) CheckRestores(frame.Payload.Span, file.Header.Machine.MemorySize, info.Offset, "checkpoint frame");
                    if (cp.Icount != info.FirstIcount) throw new TraceFormatException(info.Offset, $"checkpoint frame at icount {info.FirstIcount} holds a checkpoint at {cp.Icount}");
                    s.Checkpoints.Add((cp.Icount, info.StoredLength, info.Offset));
                    break;
                case FrameKind.Index:
                    indexFrame = frame;
                    break;
            }
        }
        if (indexFrame != null)
        {
            var listed = TraceFile.DecodeIndex(indexFrame);
            int n = file.Frames.Count - 2; // the index lists every frame before itself
            if (listed.Count != n || !listed.SequenceEqual(file.Frames.Take(n)))
                throw new TraceFormatException(indexFrame.Offset, "index does not match the frames in the file");
        }
        if (file.IsComplete && !ended) throw new TraceFormatException(file.Frames[^1].Offset, "end frame but no end event");
        if (file.IsComplete && last != file.FinalIcount) throw new TraceFormatException(file.Frames[^1].Offset, $"end frame says icount {file.FinalIcount}, last event is at {last}");
        if (strict && file.Truncation != null) throw file.Truncation;
        s.FinalIcount = Math.Max(last, s.FinalIcount);
        s.TimeSpanTicks = lastTime - firstTime;
        return s;
    }

    /// <summary>
    /// What a replay does with a checkpoint, short of running it: decode, restore into a machine of the
    /// trace's size and compare the digest. Any failure is reported at the frame that holds it.
    /// </summary>
    private static void CheckRestores(ReadOnlySpan<byte> checkpoint, ulong memorySize, long offset, string what)
    {
        try
        {
            var info = CheckpointFile.ReadInfo(checkpoint);
            if (info.MemorySize != memorySize)
                throw new InvalidDataException($"it is of a machine with {info.MemorySize} bytes of RAM; the trace's has {memorySize}");
            CheckpointFile.Load(checkpoint, NullHostPort.Instance, compileBlocks: false).Dispose();
        }
        catch (Exception e) when (e is TraceFormatException or InvalidDataException)
        {
            throw new TraceFormatException(offset, $"{what} does not restore: {(e is TraceFormatException t ? t.Reason : e.Message)}");
        }
    }

    /// <summary>The stable text of `lm trace dump`: a header comment, then one event per line.</summary>
    public static void Dump(TraceFile file, TextWriter output, ulong from = 0, ulong to = ulong.MaxValue)
    {
        var h = file.Header;
        output.WriteLine($"# lm trace v{h.FormatVersion} image {h.ImageName} digest 0x{h.ImageDigest:x16} mem {h.Machine.MemorySize} recorder {h.Recorder}");
        output.WriteLine($"# start icount {h.StartIcount} digest 0x{h.StartDigest:x16}");
        foreach (var e in file.Events(from, to)) output.WriteLine(e.ToString());
        if (file.Truncation != null) output.WriteLine($"# {file.Truncation.Message}");
    }
}
