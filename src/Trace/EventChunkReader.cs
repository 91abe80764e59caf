using System.Buffers.Binary;

namespace LiveMigration.Trace;

/// <summary>
/// Decodes the events of one chunk's raw payload, one at a time, without allocating. Malformed
/// bytes throw <see cref="TraceFormatException"/> naming the frame's offset and the payload byte.
/// </summary>
public struct EventChunkReader
{
    private readonly ReadOnlyMemory<byte> _payload;
    private readonly long _frameOffset;
    private int _pos;
    private ulong _icount;
    private ulong _lastTime;

    /// <param name="firstIcount">The chunk's first icount, from its frame header.</param>
    /// <param name="frameOffset">Offset of the frame in the trace, for error messages.</param>
    public EventChunkReader(ReadOnlyMemory<byte> payload, ulong firstIcount, long frameOffset)
    {
        _payload = payload;
        _icount = firstIcount;
        _frameOffset = frameOffset;
    }

    public readonly bool AtEnd => _pos >= _payload.Length;

    /// <summary>Payload bytes not yet decoded.</summary>
    public readonly int Remaining => _payload.Length - _pos;

    public bool TryRead(out TraceEvent e)
    {
        e = default;
        var s = _payload.Span;
        if (_pos >= s.Length) return false;
        int start = _pos;
        if (!Varint.TryRead(s, ref _pos, out ulong delta)) Fail(start, "bad icount delta");
        ulong icount = _icount + delta;
        if (icount < _icount) Fail(start, "icount overflows");
        if (_pos >= s.Length) Fail(start, "event without a kind");
        var kind = (EventKind)s[_pos++];
        ulong value = 0;
        long exitCode = 0;
        ReadOnlyMemory<byte> data = default;
        switch (kind)
        {
            case EventKind.TimeDelivered:
            case EventKind.TimeRead:
                if (!Varint.TryRead(s, ref _pos, out ulong zz)) Fail(start, "bad time delta");
                value = _lastTime + (ulong)Varint.UnZigZag(zz);
                _lastTime = value;
                break;
            case EventKind.SerialInput:
                if (!Varint.TryRead(s, ref _pos, out ulong n) || n == 0 || n > (ulong)(s.Length - _pos)) Fail(start, "bad serial input length");
                data = _payload.Slice(_pos, (int)n);
                _pos += (int)n;
                break;
            case EventKind.Entropy:
                if (!Varint.TryRead(s, ref _pos, out value) || value > 0xFFFF) Fail(start, "bad entropy value");
                break;
            case EventKind.BlockCompletion:
                if (!Varint.TryRead(s, ref _pos, out value) || value is 0 or > 0xFFFF) Fail(start, "bad block completion count");
                break;
            case EventKind.StateDigest:
                if (s.Length - _pos < 8) Fail(start, "state digest cut short");
                value = BinaryPrimitives.ReadUInt64LittleEndian(s[_pos..]);
                _pos += 8;
                break;
            case EventKind.CheckpointMarker:
                if (!Varint.TryRead(s, ref _pos, out value)) Fail(start, "bad checkpoint number");
                break;
            case EventKind.End:
                if (_pos >= s.Length) Fail(start, "end event cut short");
                value = s[_pos++];
                if (value is < 1 or > 4) Fail(start, $"unknown end reason {value}");
                if (!Varint.TryRead(s, ref _pos, out ulong code)) Fail(start, "bad exit code");
                exitCode = Varint.UnZigZag(code);
                break;
            default:
                Fail(start, $"unknown event kind {(byte)kind}");
                break;
        }
        _icount = icount;
        e = new TraceEvent(icount, kind, value, exitCode, data);
        return true;
    }

    private readonly void Fail(int at, string what) =>
        throw new TraceFormatException(_frameOffset, $"events frame: {what} at payload byte {at}");
}
