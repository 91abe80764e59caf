using System.Buffers.Binary;
using System.Text;

namespace LiveMigration.Guest.State;

/// <summary>
/// Writes component state as tagged, versioned sections: tag (4 ASCII bytes), version (u16),
/// length (u32), payload. Fields are written one by one in little-endian, never as raw structs,
/// so host layout never leaks into a format.
/// </summary>
public sealed class StateWriter
{
    private readonly MemoryStream _stream;
    private readonly Stack<long> _open = new();

    public StateWriter(MemoryStream? stream = null) => _stream = stream ?? new MemoryStream();

    public MemoryStream Stream => _stream;

    public byte[] ToArray() => _stream.ToArray();

    public void BeginSection(string tag, ushort version)
    {
        if (tag.Length != 4) throw new ArgumentException("section tags are 4 characters", nameof(tag));
        Bytes(Encoding.ASCII.GetBytes(tag));
        U16(version);
        _open.Push(_stream.Position);
        U32(0); // patched by EndSection
    }

    public void EndSection()
    {
        long lengthAt = _open.Pop();
        long end = _stream.Position;
        _stream.Position = lengthAt;
        U32(checked((uint)(end - lengthAt - 4)));
        _stream.Position = end;
    }

    /// <summary>A whole section: header, what <paramref name="writeFields"/> writes, its length.</summary>
    public void Section(string tag, ushort version, Action<StateWriter> writeFields)
    {
        BeginSection(tag, version);
        writeFields(this);
        EndSection();
    }

    /// <summary>A component's part of the state digest: its tag, then its fields, with no version or length.</summary>
    public void Tagged(string tag, Action<StateWriter> writeFields)
    {
        Bytes(Encoding.ASCII.GetBytes(tag));
        writeFields(this);
    }

    public void U8(byte v) => _stream.WriteByte(v);

    public void Bool(bool v) => _stream.WriteByte(v ? (byte)1 : (byte)0);

    public void U16(ushort v)
    {
        Span<byte> b = stackalloc byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, v);
        _stream.Write(b);
    }

    public void U32(uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, v);
        _stream.Write(b);
    }

    public void U64(ulong v)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, v);
        _stream.Write(b);
    }

    public void Bytes(ReadOnlySpan<byte> data) => _stream.Write(data);

    public void Blob(ReadOnlySpan<byte> data)
    {
        U32((uint)data.Length);
        _stream.Write(data);
    }
}
