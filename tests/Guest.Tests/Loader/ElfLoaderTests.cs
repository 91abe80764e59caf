using LiveMigration.Guest.Loader;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Loader;

/// <summary>The ELF loader: refusals are <see cref="ElfLoadException"/>s with a one-line reason.</summary>
public class ElfLoaderTests
{
    private static readonly byte[] Nop = ElfBuilder.Code(Rv.Nop);

    private static ElfLoadException Refused(byte[] image, ulong ram = 1 << 20)
    {
        using var m = new Machine(new MachineConfig { MemorySize = ram }, new TestHostPort());
        var e = Assert.Throws<ElfLoadException>(() => ElfLoader.Load(m, image));
        Assert.DoesNotContain('\n', e.Message);
        Assert.False(string.IsNullOrWhiteSpace(e.Message));
        return e;
    }

    [Fact]
    public void NotAnElf() => Assert.Contains("not an ELF", Refused("#!/bin/sh\necho hello, this is not an ELF file at all....................................."u8.ToArray()).Message);

    [Fact]
    public void EmptyFile() => Assert.Contains("not an ELF", Refused([]).Message);

    [Fact]
    public void Elf32() => Assert.Contains("32", Refused(new ElfBuilder { Class = 1 }.Segment(0x8000_0000, Nop).Build()).Message);

    [Fact]
    public void BigEndian() => Assert.Contains("endian", Refused(new ElfBuilder { Data = 2 }.Segment(0x8000_0000, Nop).Build()).Message);

    [Fact]
    public void WrongMachine()
    {
        var e = Refused(new ElfBuilder { Machine = 62 }.Segment(0x8000_0000, Nop).Build());
        Assert.Contains("RISC-V", e.Message);
        Assert.Contains("62", e.Message);
    }

    [Fact]
    public void NotExecutable() => Assert.Contains("ET_EXEC", Refused(new ElfBuilder { Type = 3 }.Segment(0x8000_0000, Nop).Build()).Message);

    [Theory]
    [InlineData(4)]    // just the magic
    [InlineData(63)]   // inside the ELF header
    [InlineData(100)]  // inside the program header
    [InlineData(121)]  // inside the segment bytes
    public void Truncated(int length)
    {
        byte[] full = new ElfBuilder().Segment(0x8000_0000, ElfBuilder.Code(Rv.Nop, Rv.Nop, Rv.Nop, Rv.Nop)).Build();
        Assert.True(length < full.Length);
        var e = Refused(full[..length]);
        Assert.Contains("truncated", e.Message);
    }

    [Theory]
    [InlineData(0x1000UL)]          // below RAM
    [InlineData(0x800F_FFFEUL)]     // runs past the end of 1 MiB
    [InlineData(0x9000_0000UL)]     // above RAM
    public void SegmentOutsideRam(ulong address)
    {
        var e = Refused(new ElfBuilder { Entry = 0x8000_0000 }.Segment(0x8000_0000, Nop).Segment(address, ElfBuilder.Code(Rv.Nop, Rv.Nop)).Build());
        Assert.Contains("does not fit in RAM", e.Message);
    }

    [Fact]
    public void HugeBssOutsideRam()
        => Assert.Contains("does not fit", Refused(new ElfBuilder().Segment(0x8000_0000, Nop, memSize: 2 << 20).Build()).Message);

    [Fact]
    public void EntryOutsideRam()
        => Assert.Contains("entry", Refused(new ElfBuilder { Entry = 0x1000 }.Segment(0x8000_0000, Nop).Build()).Message);

    [Fact]
    public void NoLoadableSegments()
        => Assert.Contains("no loadable", Refused(new ElfBuilder().Segment(0x8000_0000, Nop, type: 4).Build()).Message);

    [Fact]
    public void FileSizeLargerThanMemorySize()
        => Assert.Contains("p_filesz", Refused(new ElfBuilder().Segment(0x8000_0000, ElfBuilder.Code(Rv.Nop, Rv.Nop), memSize: 4).Build()).Message);

    [Fact]
    public void LoadsSegmentsZeroesBssAndSetsEntry()
    {
        using var m = new Machine(new MachineConfig { MemorySize = 1 << 20 }, new TestHostPort());
        m.Memory.Write(0x8000_2000, Enumerable.Repeat((byte)0xAA, 0x3000).ToArray()); // stale bytes where bss goes
        m.SetRegister(10, 5);
        m.SetRegister(11, 6);
        byte[] image = new ElfBuilder { Entry = 0x8000_0004 }
            .Segment(0x8000_0000, ElfBuilder.Code(Rv.Nop, Rv.Addi(10, 0, 1)))
            .Segment(0x8000_2000, [1, 2, 3, 4], memSize: 0x2800)
            .Build();
        Assert.Equal(0x8000_0004UL, ElfLoader.Load(m, image));
        Assert.Equal(0x8000_0004UL, m.Pc);
        Assert.Equal(0UL, m.GetRegister(10));
        Assert.Equal(0UL, m.GetRegister(11));
        var buf = new byte[0x3000];
        m.Memory.Read(0x8000_2000, buf);
        Assert.Equal([1, 2, 3, 4], buf[..4]);
        Assert.True(buf[4..0x2800].All(b => b == 0), "bss is zeroed");
        Assert.True(buf[0x2800..].All(b => b == 0xAA), "bytes past memsz are left alone");
        m.Run(1);
        Assert.Equal(1UL, m.GetRegister(10));
    }

    [Fact]
    public void ParseListsSegmentsOfARealGuest()
    {
        var (entry, segments) = ElfLoader.Parse(File.ReadAllBytes(Repo.Guest("hello")));
        Assert.Equal(0x8000_0000UL, entry);
        Assert.NotEmpty(segments);
        Assert.All(segments, s => Assert.True(s.Address >= 0x8000_0000 && s.FileSize <= s.MemorySize));
    }

    [Fact]
    public void HandWrittenElfRunsAndExitsWithItsCode()
    {
        var port = new TestHostPort();
        using var m = new Machine(new MachineConfig { MemorySize = 1 << 20 }, port);
        ElfLoader.Load(m, ElfBuilder.PrintAndExit("hi\n", 7));
        Assert.Equal(StopReason.Exited, m.Run(1000));
        Assert.Equal(7, m.ExitCode);
        Assert.Equal("hi\n", port.OutputText);
    }
}
