using System.Buffers.Binary;
using static LiveMigration.Guest.Tests.Infra.X;

namespace LiveMigration.Guest.Tests.Infra;

/// <summary>Writes minimal ELF64 executables by hand: a header, program headers, segment bytes.</summary>
public sealed class ElfBuilder
{
    public byte Class { get; init; } = 2;        // ELFCLASS64
    public byte Data { get; init; } = 1;         // little-endian
    public ushort Type { get; init; } = 2;       // ET_EXEC
    public ushort Machine { get; init; } = 243;  // EM_RISCV
    public ulong Entry { get; init; } = 0x8000_0000;
    private readonly List<(uint Type, ulong Address, byte[] Bytes, ulong MemSize)> _segments = [];

    public ElfBuilder Segment(ulong address, byte[] bytes, ulong? memSize = null, uint type = 1)
    {
        _segments.Add((type, address, bytes, memSize ?? (ulong)bytes.Length));
        return this;
    }

    public byte[] Build()
    {
        const int ehsize = 64, phentsize = 56;
        int dataStart = ehsize + phentsize * _segments.Count;
        var image = new byte[dataStart + _segments.Sum(s => s.Bytes.Length)];
        var h = image.AsSpan();
        h[0] = 0x7F; h[1] = (byte)'E'; h[2] = (byte)'L'; h[3] = (byte)'F';
        h[4] = Class; h[5] = Data; h[6] = 1;
        BinaryPrimitives.WriteUInt16LittleEndian(h[16..], Type);
        BinaryPrimitives.WriteUInt16LittleEndian(h[18..], Machine);
        BinaryPrimitives.WriteUInt32LittleEndian(h[20..], 1);
        BinaryPrimitives.WriteUInt64LittleEndian(h[24..], Entry);
        BinaryPrimitives.WriteUInt64LittleEndian(h[32..], ehsize);
        BinaryPrimitives.WriteUInt16LittleEndian(h[52..], ehsize);
        BinaryPrimitives.WriteUInt16LittleEndian(h[54..], phentsize);
        BinaryPrimitives.WriteUInt16LittleEndian(h[56..], (ushort)_segments.Count);
        int offset = dataStart;
        for (int i = 0; i < _segments.Count; i++)
        {
            var (type, address, bytes, memSize) = _segments[i];
            var ph = h.Slice(ehsize + i * phentsize, phentsize);
            BinaryPrimitives.WriteUInt32LittleEndian(ph, type);
            BinaryPrimitives.WriteUInt32LittleEndian(ph[4..], 7);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[8..], (ulong)offset);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[16..], address);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[24..], address);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[32..], (ulong)bytes.Length);
            BinaryPrimitives.WriteUInt64LittleEndian(ph[40..], memSize);
            bytes.CopyTo(h[offset..]);
            offset += bytes.Length;
        }
        return image;
    }

    public static byte[] Code(params uint[] words) => words.SelectMany(BitConverter.GetBytes).ToArray();

    /// <summary>A program that prints <paramref name="text"/> on the UART and exits through the finisher with <paramref name="exitCode"/>.</summary>
    public static byte[] PrintAndExit(string text, int exitCode)
    {
        var code = new List<uint> { Rv.Lui(T2, 0x1000_0000) };
        foreach (char ch in text) code.AddRange([Rv.Addi(T3, Zero, ch), Rv.Sb(T3, T2, 0)]);
        uint value = exitCode == 0 ? 0x5555u : ((uint)exitCode << 16) | 0x3333u;
        code.AddRange([Rv.Lui(T0, 0x0010_0000), Rv.Lui(T1, value & 0xFFFFF000), Rv.Addi(T1, T1, value & 0xFFF), Rv.Sw(T1, T0, 0), Rv.Jal(Zero, 0)]);
        return new ElfBuilder().Segment(0x8000_0000, Code([.. code])).Build();
    }

    public const int T3 = 28;
}
