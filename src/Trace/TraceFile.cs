using System.Buffers.Binary;
using LiveMigration.Trace.Schema;

namespace LiveMigration.Trace;

/// <summary>
/// Random access to a trace on a seekable stream (a file). Opening reads the header and the frame
/// list: from the footer index when the trace ends with a valid end frame, otherwise by scanning
/// frame by frame (verifying checksums) up to the last whole frame, as after a killed recorder.
/// Corruption throws <see cref="TraceFormatException"/> with its offset; a truncated tail is not an
/// error to open but is reported in <see cref="Truncation"/>.
/// </summary>
public sealed class TraceFile : IDisposable
{
    private readonly Stream _stream;
    private readonly bool _ownsStream;
    private readonly List<FrameInfo> _frames = [];

    private TraceFile(Stream stream, bool ownsStream)
    {
        _stream = stream;
        _ownsStream = ownsStream;
    }

    public TraceHeader Header { get; private set; } = null!;
    public uint FormatVersion => Header.FormatVersion;
    public long Length => _stream.Length;
    /// <summary>Every frame, header first, in file order.</summary>
    public IReadOnlyList<FrameInfo> Frames => _frames;
    /// <summary>True when the trace ends with a valid end frame.</summary>
    public bool IsComplete { get; private set; }
    /// <summary>Set when the trace stops before its end marker: where and why.</summary>
    public TraceTruncatedException? Truncation { get; private set; }
    /// <summary>True when the frame list came from the footer index rather than a scan.</summary>
    public bool FromIndex { get; private set; }
    /// <summary>The end frame's icount, or the last whole frame's end icount for a truncated trace.</summary>
    public ulong FinalIcount { get; private set; }

    public static TraceFile Open(string path, bool useIndex = true)
    {
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1 << 16);
        try { return Open(fs, useIndex, ownsStream: true); }
        catch { fs.Dispose(); throw; }
    }

    public static TraceFile Open(Stream stream, bool useIndex = true, bool ownsStream = false)
    {
        if (!stream.CanSeek) throw new ArgumentException("TraceFile needs a seekable stream; use TraceStreamReader for a socket", nameof(stream));
        var t = new TraceFile(stream, ownsStream);
        t.Load(useIndex);
        return t;
    }

    private void Load(bool useIndex)
    {
        Span<byte> magic = stackalloc byte[TraceFormat.Magic.Length];
        _stream.Position = 0;
        int got = _stream.ReadAtLeast(magic, magic.Length, throwOnEndOfStream: false);
        if (!magic[..got].SequenceEqual(TraceFormat.Magic[..got])) throw new TraceFormatException(0, "not a LiveMigration trace (bad magic)");
        if (got < magic.Length) throw new TraceTruncatedException(got, "the file ends inside the magic");
        ReadHeader();
        if (!(useIndex && TryLoadIndex())) Scan();
    }

    private void ReadHeader()
    {
        long offset = TraceFormat.Magic.Length, left = _stream.Length - offset;
        if (left < TraceFormat.FrameHeaderSize) throw new TraceTruncatedException(offset, "the file ends before its header frame");
        byte[] h = new byte[TraceFormat.FrameHeaderSize];
        ReadAt(offset, h);
        var fh = FrameHeader.Parse(h, offset);
        if (fh.Kind != FrameKind.Header) throw new TraceFormatException(offset, $"first frame is {fh.Kind}, expected the header");
        if (left < fh.TotalLength) throw new TraceTruncatedException(offset, $"the file ends inside the header frame ({left} of {fh.TotalLength} bytes)");
        Header = TraceStreamReader.ParseHeader(ReadFrame(new FrameInfo(offset, fh.Kind, fh.StoredLength, fh.RawLength, fh.FirstIcount, fh.EndIcount, 0)));
    }

    private void Scan()
    {
        _frames.Clear();
        long offset = TraceFormat.Magic.Length, length = _stream.Length;
        byte[] header = new byte[TraceFormat.FrameHeaderSize];
        while (true)
        {
            long left = length - offset;
            if (left == 0) { Truncation = new TraceTruncatedException(offset, "no end marker (recorder killed?)"); return; }
            if (left < TraceFormat.FrameHeaderSize) { Truncation = new TraceTruncatedException(offset, $"the file ends inside a frame header ({left} of {TraceFormat.FrameHeaderSize} bytes)"); return; }
            ReadAt(offset, header);
            var h = FrameHeader.Parse(header, offset);
            if (left < h.TotalLength) { Truncation = new TraceTruncatedException(offset, $"the file ends inside a {h.Kind} frame ({left} of {h.TotalLength} bytes)"); return; }
            var info = new FrameInfo(offset, h.Kind, h.StoredLength, h.RawLength, h.FirstIcount, h.EndIcount, _frames.Count);
            var frame = ReadFrame(info);
            if (_frames.Count == 0 && h.Kind != FrameKind.Header) throw new TraceFormatException(offset, $"first frame is {h.Kind}, expected the header");
            if (_frames.Count == 0) Header = TraceStreamReader.ParseHeader(frame);
            h.CheckSequence(_frames.Count, Header.FormatVersion, offset);
            if (_frames.Count > 0 && h.Kind == FrameKind.Header) throw new TraceFormatException(offset, "a second header frame");
            _frames.Add(info);
            FinalIcount = Math.Max(FinalIcount, h.EndIcount);
            offset += h.TotalLength;
            if (h.Kind == FrameKind.End)
            {
                if (frame.Payload.Length != TraceFormat.EndPayloadSize) throw new TraceFormatException(info.Offset, "end frame of the wrong size");
                if (offset != length) throw new TraceFormatException(offset, "bytes after the end frame");
                IsComplete = true;
                FinalIcount = TraceStreamReader.ParseEnd(frame).FinalIcount;
                return;
            }
        }
    }

    /// <summary>Reads the frame list from the footer; false (and the caller scans) when there is no valid footer.</summary>
    private bool TryLoadIndex()
    {
        long endOffset = _stream.Length - TraceFormat.FrameHeaderSize - TraceFormat.EndPayloadSize;
        if (endOffset < TraceFormat.Magic.Length) return false;
        try
        {
            byte[] h = new byte[TraceFormat.FrameHeaderSize];
            ReadAt(endOffset, h);
            if (h[0] != (byte)FrameKind.End) return false;
            var eh = FrameHeader.Parse(h, endOffset);
            if (eh.StoredLength != TraceFormat.EndPayloadSize) return false;
            var end = ReadFrame(new FrameInfo(endOffset, FrameKind.End, eh.StoredLength, eh.RawLength, eh.FirstIcount, eh.EndIcount));
            var (indexOffset, finalIcount) = TraceStreamReader.ParseEnd(end);
            if (indexOffset < TraceFormat.Magic.Length || indexOffset >= endOffset) return false;
            ReadAt(indexOffset, h);
            var ih = FrameHeader.Parse(h, indexOffset);
            if (ih.Kind != FrameKind.Index || indexOffset + ih.TotalLength != endOffset) return false;
            var index = ReadFrame(new FrameInfo(indexOffset, FrameKind.Index, ih.StoredLength, ih.RawLength, ih.FirstIcount, ih.EndIcount));
            var list = DecodeIndex(index);
            if (list.Count == 0 || list[0].Offset != TraceFormat.Magic.Length || list[0].Kind != FrameKind.Header) return false;
            ih.CheckSequence(list.Count, Header.FormatVersion, indexOffset);
            eh.CheckSequence(list.Count + 1, Header.FormatVersion, endOffset);
            _frames.Clear();
            _frames.AddRange(list);
            _frames.Add(new FrameInfo(indexOffset, FrameKind.Index, ih.StoredLength, ih.RawLength, ih.FirstIcount, ih.EndIcount, _frames.Count));
            _frames.Add(new FrameInfo(endOffset, FrameKind.End, eh.StoredLength, eh.RawLength, eh.FirstIcount, eh.EndIcount, _frames.Count));
            IsComplete = true;
            FromIndex = true;
            FinalIcount = finalIcount;
            return true;
        }
        catch (TraceFormatException) { return false; } // a damaged footer: the scan finds and reports the damage
    }

    internal static List<FrameInfo> DecodeIndex(TraceFrame index)
    {
        var s = index.Payload.Span;
        int pos = 0;
        if (!Varint.TryRead(s, ref pos, out ulong count) || count > (ulong)s.Length) throw new TraceFormatException(index.Offset, "index: bad entry count");
        var list = new List<FrameInfo>((int)count);
        long offset = 0;
        for (ulong i = 0; i < count; i++)
        {
            if (!Varint.TryRead(s, ref pos, out ulong delta) || !Varint.TryRead(s, ref pos, out ulong kind) ||
                !Varint.TryRead(s, ref pos, out ulong stored) || !Varint.TryRead(s, ref pos, out ulong raw) ||
                !Varint.TryRead(s, ref pos, out ulong first) || !Varint.TryRead(s, ref pos, out ulong span) ||
                kind is < 1 or > 5 || stored > TraceFormat.MaxFrameLength || raw > TraceFormat.MaxFrameLength || delta > long.MaxValue / 2)
                throw new TraceFormatException(index.Offset, $"index: entry {i} malformed");
            offset += (long)delta;
            list.Add(new FrameInfo(offset, (FrameKind)kind, (int)stored, (int)raw, first, first + span, (int)i));
        }
        if (pos != s.Length) throw new TraceFormatException(index.Offset, "index: trailing bytes");
        return list;
    }

    /// <summary>Reads, verifies and decompresses one frame.</summary>
    public TraceFrame ReadFrame(FrameInfo info)
    {
        byte[] buf = new byte[TraceFormat.FrameHeaderSize + info.StoredLength];
        if (info.Offset + buf.Length > _stream.Length) throw new TraceTruncatedException(info.Offset, $"{info.Kind} frame runs past the end of the file");
        ReadAt(info.Offset, buf);
        var h = FrameHeader.Parse(buf, info.Offset);
        if (info.Position >= 0 && Header != null) h.CheckSequence(info.Position, Header.FormatVersion, info.Offset);
        if (h.Kind != info.Kind || h.StoredLength != info.StoredLength || h.FirstIcount != info.FirstIcount || h.EndIcount != info.EndIcount)
            throw new TraceFormatException(info.Offset, "frame does not match its index entry");
        return TraceFrame.Decode(info.Offset, h, buf, buf.AsSpan(TraceFormat.FrameHeaderSize));
    }

    private void ReadAt(long offset, Span<byte> destination)
    {
        _stream.Position = offset;
        _stream.ReadExactly(destination);
    }

    /// <summary>Checkpoint frames (not counting the header's initial checkpoint).</summary>
    public IEnumerable<FrameInfo> CheckpointFrames => _frames.Where(f => f.Kind == FrameKind.Checkpoint);

    /// <summary>Frames of events and checkpoints after frame number <paramref name="fromFrame"/>, in order.</summary>
    public IEnumerable<TraceFrame> ReadFrames(int fromFrame = 1)
    {
        for (int i = fromFrame; i < _frames.Count; i++)
            if (_frames[i].Kind is FrameKind.Events or FrameKind.Checkpoint) yield return ReadFrame(_frames[i]);
    }

    /// <summary>All events with icount in [from, to], in order.</summary>
    public IEnumerable<TraceEvent> Events(ulong from = 0, ulong to = ulong.MaxValue)
    {
        foreach (var info in _frames)
        {
            if (info.Kind != FrameKind.Events || info.EndIcount < from || info.FirstIcount > to) continue;
            var r = ReadFrame(info).Events();
            while (r.TryRead(out var e))
                if (e.Icount >= from && e.Icount <= to) yield return e;
        }
    }

    public void Dispose()
    {
        if (_ownsStream) _stream.Dispose();
    }
}
