using LiveMigration.Guest;
using LiveMigration.Guest.Loader;
using LiveMigration.Guest.Memory;
using LiveMigration.Migration.Xbzrle;

namespace LiveMigration.Migration.Tests;

/// <summary>
/// The per-page pipeline of pre-copy, end to end inside one process: a real guest runs on a source
/// machine, dirty pages go round by round through <see cref="PageDeltaEncoder"/> to a destination
/// machine, and after the final round the destination's digest must equal the source's.
/// </summary>
public class PageDeltaEncoderTests
{
    private static Machine NewMachine() => new(new MachineConfig(), NullHostPort.Instance);

    /// <summary>Sends every page the client has dirty; returns how many pages went.</summary>
    private static int Round(Machine src, DirtyClient client, PageDeltaEncoder enc, Machine dst, XbzrlePageCache? dstCache, byte[] buffer)
    {
        var pages = new List<int>();
        client.CollectAndClear(pages);
        foreach (int p in pages)
        {
            var kind = enc.Encode(src, p, buffer, out int len);
            PageDeltaEncoder.Apply(dst.Memory, dstCache, p, kind, buffer.AsSpan(0, len));
        }
        return pages.Count;
    }

    [Theory]
    [InlineData(16 << 20)] // cache holds the 4 MiB working set
    [InlineData(1 << 20)]  // cache too small: evictions, full pages
    [InlineData(0)]        // no cache: zero pages and full pages only
    public void IterativePreCopyOfTheDirtyGuestEndsInTheSameDigest(int cacheBytes)
    {
        using var src = NewMachine();
        using var dst = NewMachine();
        src.Reset(ElfLoader.Load(src, File.ReadAllBytes(LiveMigration.Tests.Shared.RepoPaths.Guest("dirty"))));
        var client = src.Memory.CreateDirtyClient("precopy"); // starts with every page dirty
        var srcCache = new XbzrlePageCache(cacheBytes);
        var dstCache = new XbzrlePageCache(cacheBytes);
        var enc = new PageDeltaEncoder(srcCache);
        var buffer = new byte[GuestMemory.PageSize];

        // Let the runtime report its free RAM first, as a live guest would have long before a migration.
        src.Run(200_000);
        int first = Round(src, client, enc, dst, dstCache, buffer);
        Assert.Equal(src.Memory.PageCount, first);
        for (int round = 0; round < 10; round++)
        {
            Assert.Equal(StopReason.InstructionLimit, src.Run(src.Icount + 300_000));
            Round(src, client, enc, dst, dstCache, buffer);
        }
        // Stop-and-copy: the last dirty pages, then CPU and devices.
        Round(src, client, enc, dst, dstCache, buffer);
        dst.RestoreDeviceState(new Guest.State.StateReader(src.SaveDeviceState()));
        Assert.Equal(src.ComputeDigest(), dst.ComputeDigest());

        // Both run on to the end and agree again.
        Assert.Equal(StopReason.Exited, src.Run(500_000_000));
        Assert.Equal(StopReason.Exited, dst.Run(500_000_000));
        Assert.Equal(src.ComputeDigest(), dst.ComputeDigest());

        var c = enc.Counters;
        Console.WriteLine($"cache {cacheBytes}: {c}");
        Assert.True(c.Pages(PageEncoding.Free) >= (120 << 20) / GuestMemory.PageSize, c.ToString());
        Assert.True(c.Pages(PageEncoding.Full) > 0, c.ToString());
        if (cacheBytes >= 16 << 20)
        {
            Assert.True(c.Pages(PageEncoding.Delta) > 0, c.ToString());
            // ~20 sparse 8-byte writes per page per round: deltas are far smaller than pages.
            Assert.True(c.Bytes(PageEncoding.Delta) < c.Pages(PageEncoding.Delta) * GuestMemory.PageSize / 4, c.ToString());
        }
        if (cacheBytes == 0) Assert.Equal(0, c.Pages(PageEncoding.Delta));
        Assert.Equal(srcCache.PagesByRecency(), dstCache.PagesByRecency());
    }

    [Fact]
    public void ApplyRejectsInconsistentInput()
    {
        using var dst = NewMachine();
        var cache = new XbzrlePageCache(1 << 20);
        Assert.Throws<InvalidDataException>(() => PageDeltaEncoder.Apply(dst.Memory, cache, 3, PageEncoding.Delta, [0, 1, 5]));
        Assert.Throws<InvalidDataException>(() => PageDeltaEncoder.Apply(dst.Memory, cache, 3, PageEncoding.Unchanged, []));
        Assert.Throws<InvalidDataException>(() => PageDeltaEncoder.Apply(dst.Memory, cache, 3, PageEncoding.Full, new byte[100]));
        Assert.Throws<InvalidDataException>(() => PageDeltaEncoder.Apply(dst.Memory, cache, 3, PageEncoding.Zero, [1]));
        Assert.Throws<InvalidDataException>(() => PageDeltaEncoder.Apply(dst.Memory, cache, dst.Memory.PageCount, PageEncoding.Zero, []));
        Assert.Throws<InvalidDataException>(() => PageDeltaEncoder.Apply(dst.Memory, cache, 3, (PageEncoding)9, []));
        PageDeltaEncoder.Apply(dst.Memory, cache, 3, PageEncoding.Full, new byte[GuestMemory.PageSize]);
        Assert.Throws<InvalidDataException>(() => PageDeltaEncoder.Apply(dst.Memory, cache, 3, PageEncoding.Delta, [0x80, 0x20, 0x01, 0xAA]));
    }

}
