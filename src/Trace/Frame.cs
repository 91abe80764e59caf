using System.Buffers.Binary;
using System.IO.Hashing;
using LiveMigration.Trace.Compression;

namespace LiveMigration.Trace;

/// <summary>
/// A frame's fixed 36-byte header (FORMAT.md, "Frames"):
/// kind u8, flags u8, sequence u16, stored length u32, raw length u32, first icount u64,
/// end icount u64, checksum u64 = xxh3-64(stored payload, seed = xxh3-64(header bytes 0..27)).
/// The sequence is the frame's position in the trace (header = 0) modulo 65536 since format v2,
/// so a dropped, repeated or spliced-in frame is caught; v1 wrote 0 there.
/// </summary>
public readonly record struct FrameHeader(FrameKind Kind, FrameFlags Flags, int StoredLength, int RawLength, ulong FirstIcount, ulong EndIcount, ulong Checksum, ushort Sequence = 0)
{
    /// <summary>Checks the sequence field against the frame's position, as the trace's format version requires.</summary>
    public void CheckSequence(int position, uint formatVersion, long offset)
    {
        ushort expected = formatVersion >= 2 ? (ushort)position : (ushort)0;
        if (Sequence != expected) throw new TraceFormatException(offset, $"{Kind} frame has sequence number {Sequence}; frame {position} must have {expected} (a frame is missing, repeated or spliced in)");
    }

    public void Write(Span<byte> h)
    {
        h[0] = (byte)Kind;
        h[1] = (byte)Flags;
        BinaryPrimitives.WriteUInt16LittleEndian(h[2..], Sequence);
        BinaryPrimitives.WriteUInt32LittleEndian(h[4..], (uint)StoredLength);
        BinaryPrimitives.WriteUInt32LittleEndian(h[8..], (uint)RawLength);
        BinaryPrimitives.WriteUInt64LittleEndian(h[12..], FirstIcount);
        BinaryPrimitives.WriteUInt64LittleEndian(h[20..], EndIcount);
        BinaryPrimitives.WriteUInt64LittleEndian(h[28..], Checksum);
    }

    /// <summary>Parses and sanity-checks a header (not the checksum, which needs the payload).</summary>
    public static FrameHeader Parse(ReadOnlySpan<byte> h, long offset)
    {
        var kind = (FrameKind)h[0];
        if (kind is < FrameKind.Header or > FrameKind.End) throw new TraceFormatException(offset, $"unknown frame kind {h[0]}");
        var flags = (FrameFlags)h[1];
        if ((flags & ~FrameFlags.Zstd) != 0) throw new TraceFormatException(offset, $"unknown frame flags 0x{h[1]:x2}");
        ushort sequence = BinaryPrimitives.ReadUInt16LittleEndian(h[2..]);
        uint stored = BinaryPrimitives.ReadUInt32LittleEndian(h[4..]);
        uint raw = BinaryPrimitives.ReadUInt32LittleEndian(h[8..]);
        if (stored > TraceFormat.MaxFrameLength || raw > TraceFormat.MaxFrameLength)
            throw new TraceFormatException(offset, $"frame length {Math.Max(stored, raw)} exceeds the {TraceFormat.MaxFrameLength}-byte limit");
        if ((flags & FrameFlags.Zstd) == 0 && stored != raw) throw new TraceFormatException(offset, "uncompressed frame with stored length != raw length");
        ulong first = BinaryPrimitives.ReadUInt64LittleEndian(h[12..]);
        ulong end = BinaryPrimitives.ReadUInt64LittleEndian(h[20..]);
        if (end < first) throw new TraceFormatException(offset, $"frame end icount {end} before its first icount {first}");
        ulong sum = BinaryPrimitives.ReadUInt64LittleEndian(h[28..]);
        return new FrameHeader(kind, flags, (int)stored, (int)raw, first, end, sum, sequence);
    }

    public static ulong ComputeChecksum(ReadOnlySpan<byte> header28, ReadOnlySpan<byte> payload) =>
        XxHash3.HashToUInt64(payload, (long)XxHash3.HashToUInt64(header28[..28]));

    public int TotalLength => TraceFormat.FrameHeaderSize + StoredLength;
}

/// <summary>A whole, checksum-verified frame with its payload decompressed.</summary>
public sealed record TraceFrame(long Offset, FrameHeader Header, ReadOnlyMemory<byte> Payload)
{
    public FrameKind Kind => Header.Kind;
    public ulong FirstIcount => Header.FirstIcount;
    public ulong EndIcount => Header.EndIcount;

    /// <summary>Events of an <see cref="FrameKind.Events"/> frame, decoded lazily.</summary>
    public EventChunkReader Events()
    {
        if (Kind != FrameKind.Events) throw new InvalidOperationException($"frame at byte {Offset} is a {Kind} frame, not events");
        return new EventChunkReader(Payload, FirstIcount, Offset);
    }

    /// <summary>Verifies a frame's checksum and decompresses its payload.</summary>
    public static TraceFrame Decode(long offset, FrameHeader header, ReadOnlySpan<byte> headerBytes, ReadOnlySpan<byte> stored)
    {
        if (FrameHeader.ComputeChecksum(headerBytes, stored) != header.Checksum)
            throw new TraceFormatException(offset, $"{header.Kind} frame checksum mismatch");
        byte[] raw;
        if ((header.Flags & FrameFlags.Zstd) != 0)
        {
            if (Zstd.FrameContentSize(stored) != header.RawLength)
                throw new TraceFormatException(offset, $"{header.Kind} frame: zstd content size does not match raw length {header.RawLength}");
            raw = new byte[header.RawLength];
            try
            {
                if (Zstd.Decompress(stored, raw) != header.RawLength) throw new TraceFormatException(offset, "zstd payload shorter than its raw length");
            }
            catch (InvalidDataException e)
            {
                throw new TraceFormatException(offset, $"{header.Kind} frame: {e.Message}");
            }
        }
        else raw = stored.ToArray();
        return new TraceFrame(offset, header, raw);
    }
}

/// <summary>Where a frame sits in a trace, as the index footer and a scan list it.</summary>
/// <remarks><see cref="Position"/> is the frame's number in the trace (header = 0), or -1 when unknown.</remarks>
public readonly record struct FrameInfo(long Offset, FrameKind Kind, int StoredLength, int RawLength, ulong FirstIcount, ulong EndIcount, int Position = -1);
