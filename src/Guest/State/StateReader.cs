using System.Buffers.Binary;
using System.Text;

namespace LiveMigration.Guest.State;

/// <summary>Reads what <see cref="StateWriter"/> wrote; every malformed input is an <see cref="InvalidDataException"/>.</summary>
public sealed class StateReader
{
    private readonly ReadOnlyMemory<byte> _data;
    private int _pos;
    private readonly Stack<int> _sectionEnds = new();

    public StateReader(ReadOnlyMemory<byte> data) => _data = data;

    public int Position => _pos;
    public bool AtEnd => _pos >= _data.Length;

    private ReadOnlySpan<byte> Take(int n) => _data.Span.Slice(Advance(n), n);

    private int Advance(long n)
    {
        int limit = _sectionEnds.Count > 0 ? _sectionEnds.Peek() : _data.Length;
        if (n < 0 || _pos + n > limit) throw new InvalidDataException($"state truncated at byte {_pos} (wanted {n} more)");
        int start = _pos;
        _pos += (int)n;
        return start;
    }

    /// <summary>True when the next section carries <paramref name="tag"/> (for optional sections).</summary>
    public bool NextSectionIs(string tag)
    {
        int limit = _sectionEnds.Count > 0 ? _sectionEnds.Peek() : _data.Length;
        return _pos + 4 <= limit && Encoding.ASCII.GetString(_data.Span.Slice(_pos, 4)) == tag;
    }

    /// <summary>Opens a section, checking its tag and that its version is one this build can read.</summary>
    public ushort OpenSection(string tag, ushort minVersion, ushort maxVersion)
    {
        string found = Encoding.ASCII.GetString(Take(4));
        if (found != tag) throw new InvalidDataException($"expected state section '{tag}' but found '{found}' at byte {_pos - 4}");
        ushort version = U16();
        if (version < minVersion || version > maxVersion)
            throw new InvalidDataException($"state section '{tag}' has version {version}; this build reads {minVersion}..{maxVersion}");
        uint length = U32();
        int limit = _sectionEnds.Count > 0 ? _sectionEnds.Peek() : _data.Length;
        // Compared as longs: a corrupt length near 4 GiB must not overflow into an exception of another type.
        if (_pos + (long)length > limit) throw new InvalidDataException($"state section '{tag}' runs past the end of its data");
        int end = _pos + (int)length;
        _sectionEnds.Push(end);
        return version;
    }

    /// <summary>Closes a section; newer minor versions may append fields an older reader skips.</summary>
    public void CloseSection() => _pos = _sectionEnds.Pop();

    public byte U8() => Take(1)[0];
    public bool Bool() => Take(1)[0] != 0;
    public ushort U16() => BinaryPrimitives.ReadUInt16LittleEndian(Take(2));
    public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));
    public ulong U64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8));
    public ReadOnlySpan<byte> Bytes(int n) => Take(n);

    /// <summary>The next <paramref name="n"/> bytes without copying them (they stay valid as long as the input).</summary>
    public ReadOnlyMemory<byte> Slice(long n) => _data.Slice(Advance(n), (int)n);
    public ReadOnlySpan<byte> Blob()
    {
        uint n = U32();
        if (n > int.MaxValue) throw new InvalidDataException($"state blob of {n} bytes at byte {_pos - 4} is larger than any state");
        return Take((int)n);
    }
}
