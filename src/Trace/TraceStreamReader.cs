using System.Buffers.Binary;
using LiveMigration.Trace.Schema;

namespace LiveMigration.Trace;

/// <summary>What <see cref="TraceStreamReader.TryReadFrame"/> found.</summary>
public enum StreamReadStatus
{
    /// <summary>A whole, verified frame was returned.</summary>
    Frame,
    /// <summary>The bytes so far end inside a frame (or the magic): append more and try again.</summary>
    NeedMoreData,
    /// <summary>The end frame has been read: the trace is complete.</summary>
    Finished,
}

/// <summary>
/// A resumable, push-style trace decoder for bytes that arrive piecemeal (a migration destination
/// reading a socket). <see cref="Append"/> whatever arrived, then call <see cref="TryReadFrame"/>
/// until it says <see cref="StreamReadStatus.NeedMoreData"/>. Frames come out whole and
/// checksum-verified; corruption throws <see cref="TraceFormatException"/> with the absolute offset.
/// Call <see cref="CompleteInput"/> when the sender is gone: a partial frame left over then throws
/// <see cref="TraceTruncatedException"/>.
/// The stream is a trace file's bytes from offset 0 (magic, header frame, frames...), which is also
/// exactly what a <see cref="TraceWriter"/> writes to a socket.
/// </summary>
public sealed class TraceStreamReader
{
    private byte[] _buffer = new byte[64 * 1024];
    private int _start;     // first unconsumed byte in _buffer
    private int _end;       // one past the last appended byte
    private long _consumed; // absolute offset of _buffer[_start]
    private bool _magicSeen;
    private bool _inputComplete;
    private bool _finished;

    /// <param name="expectMagic">
    /// True for a trace file's bytes (and what a <see cref="TraceWriter"/> writes to its stream); false
    /// for the frames alone, as <see cref="TraceWriterOptions.FrameSink"/> hands them out.
    /// </param>
    public TraceStreamReader(bool expectMagic = true) => _magicSeen = !expectMagic;

    /// <summary>The header, once its frame has been read (the first frame returned).</summary>
    public TraceHeader? Header { get; private set; }

    /// <summary>Absolute offset of the next byte to decode.</summary>
    public long Offset => _consumed;

    /// <summary>Bytes appended but not yet decoded into frames.</summary>
    public int Buffered => _end - _start;

    public bool IsFinished => _finished;

    /// <summary>Whole frames decoded so far, the header included.</summary>
    public int FramesRead { get; private set; }

    /// <summary>Copies <paramref name="data"/> into the reader's buffer.</summary>
    public void Append(ReadOnlySpan<byte> data)
    {
        if (_inputComplete) throw new InvalidOperationException("input already completed");
        if (_end + data.Length > _buffer.Length)
        {
            int live = _end - _start;
            if (live + data.Length <= _buffer.Length && _start > 0)
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, live);
            else
            {
                var bigger = new byte[Math.Max(_buffer.Length * 2, live + data.Length)];
                Buffer.BlockCopy(_buffer, _start, bigger, 0, live);
                _buffer = bigger;
            }
            _start = 0;
            _end = live;
        }
        data.CopyTo(_buffer.AsSpan(_end));
        _end += data.Length;
    }

    /// <summary>No more bytes will arrive.</summary>
    public void CompleteInput() => _inputComplete = true;

    public StreamReadStatus TryReadFrame(out TraceFrame? frame)
    {
        frame = null;
        if (_finished)
        {
            if (_end > _start) throw new TraceFormatException(_consumed, "bytes after the end frame");
            return StreamReadStatus.Finished;
        }
        var avail = _buffer.AsSpan(_start, _end - _start);
        if (!_magicSeen)
        {
            int m = TraceFormat.Magic.Length;
            int check = Math.Min(m, avail.Length);
            if (!avail[..check].SequenceEqual(TraceFormat.Magic[..check])) throw new TraceFormatException(_consumed, "not a LiveMigration trace (bad magic)");
            if (avail.Length < m) return NeedMore("inside the file magic");
            Consume(m);
            _magicSeen = true;
            avail = avail[m..];
        }
        if (avail.Length < TraceFormat.FrameHeaderSize) return NeedMore(avail.Length == 0 ? null : "inside a frame header");
        var h = FrameHeader.Parse(avail, _consumed);
        if (avail.Length < h.TotalLength) return NeedMore($"inside a {h.Kind} frame of {h.TotalLength} bytes");
        frame = TraceFrame.Decode(_consumed, h, avail, avail.Slice(TraceFormat.FrameHeaderSize, h.StoredLength));
        CheckOrder(frame);
        h.CheckSequence(FramesRead, Header!.FormatVersion, frame.Offset);
        FramesRead++;
        Consume(h.TotalLength);
        return StreamReadStatus.Frame;
    }

    private StreamReadStatus NeedMore(string? where)
    {
        if (!_inputComplete) return StreamReadStatus.NeedMoreData;
        if (where != null) throw new TraceTruncatedException(_consumed, $"the data ends {where}");
        throw new TraceTruncatedException(_consumed, Header == null ? "no header frame" : "no end marker (recorder killed?)");
    }

    private void CheckOrder(TraceFrame frame)
    {
        if (Header == null)
        {
            if (frame.Kind != FrameKind.Header) throw new TraceFormatException(frame.Offset, $"first frame is {frame.Kind}, expected the header");
            Header = ParseHeader(frame);
            return;
        }
        switch (frame.Kind)
        {
            case FrameKind.Header: throw new TraceFormatException(frame.Offset, "a second header frame");
            case FrameKind.End:
                if (frame.Payload.Length != TraceFormat.EndPayloadSize) throw new TraceFormatException(frame.Offset, "end frame of the wrong size");
                _finished = true;
                break;
        }
    }

    internal static TraceHeader ParseHeader(TraceFrame frame)
    {
        TraceHeader header;
        try { header = TraceHeader.Parser.ParseFrom(frame.Payload.Span); }
        catch (Google.Protobuf.InvalidProtocolBufferException e) { throw new TraceFormatException(frame.Offset, $"header does not parse: {e.Message}"); }
        if (header.FormatVersion < TraceFormat.MinReadableVersion || header.FormatVersion > TraceFormat.CurrentVersion)
            throw new TraceFormatException(frame.Offset, $"trace format version {header.FormatVersion}; this build reads {TraceFormat.MinReadableVersion}..{TraceFormat.CurrentVersion}");
        if (header.FormatVersion < TraceFormat.DiskVersion && header.DiskImageDigest != 0)
            throw new TraceFormatException(frame.Offset, $"a version {header.FormatVersion} trace names a drive image; drives came with version {TraceFormat.DiskVersion}");
        if (header.Machine == null || header.Machine.MemorySize == 0) throw new TraceFormatException(frame.Offset, "header has no machine config");
        if (Guest.MachineConfig.MemorySizeProblem(header.Machine.MemorySize) is { } problem) throw new TraceFormatException(frame.Offset, $"header's {problem}");
        if (header.Machine.RamBase != Guest.Memory.GuestMemory.DefaultBase)
            throw new TraceFormatException(frame.Offset, $"header puts RAM at 0x{header.Machine.RamBase:x}; this machine has it at 0x{Guest.Memory.GuestMemory.DefaultBase:x}");
        return header;
    }

    private void Consume(int n)
    {
        _start += n;
        _consumed += n;
        if (_start == _end) { _start = 0; _end = 0; }
    }

    /// <summary>Reads the end frame's payload: index offset and final icount.</summary>
    public static (long IndexOffset, ulong FinalIcount) ParseEnd(TraceFrame end) =>
        (BinaryPrimitives.ReadInt64LittleEndian(end.Payload.Span), BinaryPrimitives.ReadUInt64LittleEndian(end.Payload.Span[8..]));
}
