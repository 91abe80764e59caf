using System.Buffers;
using System.Buffers.Binary;

namespace LiveMigration.Trace;

/// <summary>
/// Appends events to the raw (uncompressed) payload of one events chunk in a pooled buffer.
/// Grammar (FORMAT.md): chunk = event*; event = delta-icount:varint kind:u8 payload.
/// The first event's delta is taken from the chunk's first icount (frame header), so every chunk
/// decodes on its own. No allocation per event.
/// </summary>
public sealed class EventChunkWriter : IDisposable
{
    private byte[] _buffer;
    private int _length;
    private ulong _lastIcount;
    private ulong _lastTime;

    public EventChunkWriter(int initialCapacity = TraceFormat.DefaultChunkSize + 1024) =>
        _buffer = ArrayPool<byte>.Shared.Rent(initialCapacity);

    public int Length => _length;
    public int Count { get; private set; }
    public bool IsEmpty => Count == 0;
    public ulong FirstIcount { get; private set; }
    public ulong LastIcount => _lastIcount;
    public ReadOnlySpan<byte> Payload => _buffer.AsSpan(0, _length);

    /// <summary>Empties the chunk; the next event must still not go back before the last one.</summary>
    public void Clear()
    {
        _length = 0;
        Count = 0;
        _lastTime = 0;
    }

    public void TimeDelivered(ulong icount, ulong time) => Time(icount, EventKind.TimeDelivered, time);

    public void TimeRead(ulong icount, ulong time) => Time(icount, EventKind.TimeRead, time);

    private void Time(ulong icount, EventKind kind, ulong time)
    {
        var span = Begin(icount, kind, Varint.MaxLength);
        int n = Varint.Write(span, Varint.ZigZag((long)(time - _lastTime)));
        _lastTime = time;
        _length += n;
    }

    public void SerialInput(ulong icount, ReadOnlySpan<byte> data)
    {
        var span = Begin(icount, EventKind.SerialInput, Varint.MaxLength + data.Length);
        int n = Varint.Write(span, (ulong)data.Length);
        data.CopyTo(span[n..]);
        _length += n + data.Length;
    }

    public void Entropy(ulong icount, ushort value)
    {
        var span = Begin(icount, EventKind.Entropy, Varint.MaxLength);
        _length += Varint.Write(span, value);
    }

    public void BlockCompletion(ulong icount, int count)
    {
        var span = Begin(icount, EventKind.BlockCompletion, Varint.MaxLength);
        _length += Varint.Write(span, (ulong)count);
    }

    public void StateDigest(ulong icount, ulong digest)
    {
        var span = Begin(icount, EventKind.StateDigest, 8);
        BinaryPrimitives.WriteUInt64LittleEndian(span, digest);
        _length += 8;
    }

    public void CheckpointMarker(ulong icount, ulong sequence)
    {
        var span = Begin(icount, EventKind.CheckpointMarker, Varint.MaxLength);
        _length += Varint.Write(span, sequence);
    }

    public void End(ulong icount, EndReason reason, long exitCode)
    {
        var span = Begin(icount, EventKind.End, 1 + Varint.MaxLength);
        span[0] = (byte)reason;
        _length += 1 + Varint.Write(span[1..], Varint.ZigZag(exitCode));
    }

    /// <summary>Writes delta-icount and kind; returns room for <paramref name="payloadMax"/> payload bytes.</summary>
    private Span<byte> Begin(ulong icount, EventKind kind, int payloadMax)
    {
        if (icount < _lastIcount)
            throw new ArgumentOutOfRangeException(nameof(icount), $"event at icount {icount} after one at {_lastIcount}: events must be logged in icount order");
        if (Count == 0) { FirstIcount = icount; _lastIcount = icount; } // a chunk's first delta is from its own first icount
        int need = _length + Varint.MaxLength + 1 + payloadMax;
        if (need > _buffer.Length) Grow(need);
        _length += Varint.Write(_buffer.AsSpan(_length), icount - _lastIcount);
        _buffer[_length++] = (byte)kind;
        _lastIcount = icount;
        Count++;
        return _buffer.AsSpan(_length);
    }

    private void Grow(int need)
    {
        var bigger = ArrayPool<byte>.Shared.Rent(Math.Max(need, _buffer.Length * 2));
        _buffer.AsSpan(0, _length).CopyTo(bigger);
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = bigger;
    }

    public void Dispose()
    {
        if (_buffer.Length == 0) return;
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = [];
    }
}
