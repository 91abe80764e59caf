using System.Buffers.Binary;

namespace LiveMigration.Guest.Loader;

/// <summary>A guest image we refuse, with a one-line reason.</summary>
public sealed class ElfLoadException(string message) : Exception(message);

/// <summary>One PT_LOAD segment of a guest image.</summary>
public readonly record struct ElfSegment(ulong Address, ulong FileOffset, ulong FileSize, ulong MemorySize);

/// <summary>Loads a RISC-V ELF64 executable's PT_LOAD segments into guest RAM.</summary>
public static class ElfLoader
{
    private const ushort EmRiscv = 243;
    private const uint PtLoad = 1;

    /// <summary>Checks the image and lists its segments without touching a machine.</summary>
    public static (ulong Entry, List<ElfSegment> Segments) Parse(ReadOnlySpan<byte> image)
    {
        if (image.Length < 4 || image[0] != 0x7F || image[1] != (byte)'E' || image[2] != (byte)'L' || image[3] != (byte)'F')
            throw new ElfLoadException("not an ELF file (bad magic)");
        // A file with the magic but shorter than the header is a cut-off ELF, not a non-ELF.
        if (image.Length < 64) throw new ElfLoadException($"ELF header truncated ({image.Length} of 64 bytes)");
        if (image[4] != 2) throw new ElfLoadException("not a 64-bit ELF (ELFCLASS32); this machine is RV64");
        if (image[5] != 1) throw new ElfLoadException("not a little-endian ELF");
        ushort type = BinaryPrimitives.ReadUInt16LittleEndian(image[16..]);
        ushort machine = BinaryPrimitives.ReadUInt16LittleEndian(image[18..]);
        if (machine != EmRiscv) throw new ElfLoadException($"not a RISC-V ELF (e_machine {machine}, expected {EmRiscv})");
        if (type != 2) throw new ElfLoadException($"not an executable ELF (e_type {type}, expected ET_EXEC)");
        ulong entry = BinaryPrimitives.ReadUInt64LittleEndian(image[24..]);
        ulong phoff = BinaryPrimitives.ReadUInt64LittleEndian(image[32..]);
        ushort phentsize = BinaryPrimitives.ReadUInt16LittleEndian(image[54..]);
        ushort phnum = BinaryPrimitives.ReadUInt16LittleEndian(image[56..]);
        if (phentsize < 56 || phoff > (ulong)image.Length || phoff + (ulong)phentsize * phnum > (ulong)image.Length)
            throw new ElfLoadException("ELF program headers lie outside the file (truncated?)");

        var segments = new List<ElfSegment>();
        for (int i = 0; i < phnum; i++)
        {
            var ph = image.Slice((int)(phoff + (ulong)(i * phentsize)), phentsize);
            if (BinaryPrimitives.ReadUInt32LittleEndian(ph) != PtLoad) continue;
            ulong offset = BinaryPrimitives.ReadUInt64LittleEndian(ph[8..]);
            ulong paddr = BinaryPrimitives.ReadUInt64LittleEndian(ph[24..]);
            ulong filesz = BinaryPrimitives.ReadUInt64LittleEndian(ph[32..]);
            ulong memsz = BinaryPrimitives.ReadUInt64LittleEndian(ph[40..]);
            if (filesz > memsz) throw new ElfLoadException($"ELF segment {i} has p_filesz > p_memsz");
            if (offset > (ulong)image.Length || filesz > (ulong)image.Length - offset)
                throw new ElfLoadException($"ELF segment {i} lies outside the file (truncated?)");
            if (memsz != 0) segments.Add(new ElfSegment(paddr, offset, filesz, memsz));
        }
        if (segments.Count == 0) throw new ElfLoadException("ELF has no loadable segments");
        return (entry, segments);
    }

    /// <summary>Loads the image and points the hart at its entry with a0 = hartid (0), a1 = device-tree address (0).</summary>
    public static ulong Load(Machine machine, ReadOnlySpan<byte> image)
    {
        var (entry, segments) = Parse(image);
        var mem = machine.Memory;
        foreach (var s in segments)
        {
            if (!mem.Contains(s.Address, (int)Math.Min(s.MemorySize, int.MaxValue)) || s.MemorySize > mem.Size)
                throw new ElfLoadException($"ELF segment at 0x{s.Address:x} ({s.MemorySize} bytes) does not fit in RAM 0x{mem.Base:x}..0x{mem.Base + mem.Size:x}");
        }
        if (!mem.Contains(entry, 2)) throw new ElfLoadException($"ELF entry point 0x{entry:x} is outside RAM");
        foreach (var s in segments)
        {
            mem.Write(s.Address, image.Slice((int)s.FileOffset, (int)s.FileSize));
            // memsz beyond filesz is bss: RAM starts zeroed, so only zero what was written before.
            for (ulong a = s.Address + s.FileSize, end = s.Address + s.MemorySize; a < end;)
            {
                ulong pageEnd = Math.Min((a | 0xFFF) + 1, end);
                if (mem.IsTouched((int)((a - mem.Base) >> 12))) mem.Write(a, new byte[pageEnd - a]);
                a = pageEnd;
            }
        }
        machine.Reset(entry);
        machine.SetRegister(10, 0);
        machine.SetRegister(11, 0);
        return entry;
    }
}
