using System.Buffers.Binary;
using System.Text;

namespace LiveMigration.Guest.Platform;

/// <summary>
/// Writes a flattened device tree blob (DTB, format version 17, Devicetree Specification §5):
/// <code>
/// blob   = header(40 bytes) mem_rsvmap struct strings
/// header = magic 0xd00dfeed, totalsize, off_dt_struct, off_dt_strings, off_mem_rsvmap,
///          version 17, last_comp_version 16, boot_cpuid_phys, size_dt_strings, size_dt_struct   (big-endian u32)
/// rsvmap = (address u64, size u64)* (0, 0)
/// struct = node* END(9);   node = BEGIN_NODE(1) name\0 pad4 (PROP(3) len nameoff value pad4)* node* END_NODE(2)
/// </code>
/// Property names are stored once each in the strings block. Nodes and properties come out in the
/// order they are added, so the same calls give the same bytes.
/// </summary>
public sealed class FdtWriter
{
    public const uint Magic = 0xD00D_FEED;
    private const uint TokenBeginNode = 1, TokenEndNode = 2, TokenProp = 3, TokenEnd = 9;
    private const int HeaderSize = 40;

    private readonly MemoryStream _struct = new();
    private readonly MemoryStream _strings = new();
    private readonly Dictionary<string, uint> _nameOffsets = new(StringComparer.Ordinal);
    private readonly List<(ulong Address, ulong Size)> _reserved = [];
    private int _depth;
    private bool _finished;

    public void AddReservation(ulong address, ulong size) => _reserved.Add((address, size));

    public void BeginNode(string name)
    {
        CheckOpen();
        if (name.Contains('\0') || (_depth > 0 && name.Length == 0)) throw new ArgumentException($"bad node name '{name}'", nameof(name));
        Token(TokenBeginNode);
        _struct.Write(Encoding.ASCII.GetBytes(name));
        _struct.WriteByte(0);
        Align();
        _depth++;
    }

    public void EndNode()
    {
        CheckOpen();
        if (_depth == 0) throw new InvalidOperationException("EndNode without an open node");
        Token(TokenEndNode);
        _depth--;
    }

    public void Property(string name, ReadOnlySpan<byte> value)
    {
        CheckOpen();
        if (_depth == 0) throw new InvalidOperationException($"property '{name}' outside a node");
        Token(TokenProp);
        U32(_struct, (uint)value.Length);
        U32(_struct, NameOffset(name));
        _struct.Write(value);
        Align();
    }

    /// <summary>An empty property (a flag such as <c>interrupt-controller</c> or <c>ranges</c>).</summary>
    public void Property(string name) => Property(name, ReadOnlySpan<byte>.Empty);

    /// <summary>One or more 32-bit cells.</summary>
    public void Cells(string name, params ReadOnlySpan<uint> cells)
    {
        Span<byte> b = stackalloc byte[cells.Length * 4];
        for (int i = 0; i < cells.Length; i++) BinaryPrimitives.WriteUInt32BigEndian(b[(i * 4)..], cells[i]);
        Property(name, b);
    }

    /// <summary>A NUL-terminated string, or a string list when several are given.</summary>
    public void Strings(string name, params ReadOnlySpan<string> values)
    {
        var b = new MemoryStream();
        foreach (string s in values)
        {
            if (s.Contains('\0')) throw new ArgumentException($"property '{name}' has a NUL inside a string", nameof(values));
            b.Write(Encoding.ASCII.GetBytes(s));
            b.WriteByte(0);
        }
        Property(name, b.ToArray());
    }

    /// <summary>The finished blob; no node may be open.</summary>
    public byte[] Finish(uint bootCpu = 0)
    {
        CheckOpen();
        if (_depth != 0) throw new InvalidOperationException($"{_depth} node(s) still open");
        Token(TokenEnd);
        _finished = true;

        int rsvOffset = HeaderSize; // already 8-byte aligned
        int rsvSize = (_reserved.Count + 1) * 16;
        int structOffset = rsvOffset + rsvSize;
        int stringsOffset = structOffset + (int)_struct.Length;
        int total = stringsOffset + (int)_strings.Length;
        var blob = new byte[total];
        Span<byte> h = blob;
        uint[] header = [Magic, (uint)total, (uint)structOffset, (uint)stringsOffset, (uint)rsvOffset, 17, 16, bootCpu, (uint)_strings.Length, (uint)_struct.Length];
        for (int i = 0; i < header.Length; i++) BinaryPrimitives.WriteUInt32BigEndian(h[(i * 4)..], header[i]);
        for (int i = 0; i < _reserved.Count; i++)
        {
            BinaryPrimitives.WriteUInt64BigEndian(h[(rsvOffset + i * 16)..], _reserved[i].Address);
            BinaryPrimitives.WriteUInt64BigEndian(h[(rsvOffset + i * 16 + 8)..], _reserved[i].Size);
        }
        _struct.GetBuffer().AsSpan(0, (int)_struct.Length).CopyTo(h[structOffset..]);
        _strings.GetBuffer().AsSpan(0, (int)_strings.Length).CopyTo(h[stringsOffset..]);
        return blob;
    }

    private uint NameOffset(string name)
    {
        if (_nameOffsets.TryGetValue(name, out uint off)) return off;
        off = (uint)_strings.Length;
        _strings.Write(Encoding.ASCII.GetBytes(name));
        _strings.WriteByte(0);
        _nameOffsets[name] = off;
        return off;
    }

    private void Token(uint token) => U32(_struct, token);

    private void Align()
    {
        while (_struct.Length % 4 != 0) _struct.WriteByte(0);
    }

    private void CheckOpen()
    {
        if (_finished) throw new InvalidOperationException("the blob is already finished");
    }

    private static void U32(MemoryStream s, uint v)
    {
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(b, v);
        s.Write(b);
    }
}
