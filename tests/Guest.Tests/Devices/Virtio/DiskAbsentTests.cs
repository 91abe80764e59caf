using LiveMigration.Guest.Devices.Virtio.Block;

namespace LiveMigration.Guest.Tests.Devices.Virtio;

/// <summary>
/// Post-copy blocks on a disk: absent blocks are fetched (in runs) before a read or a partial write
/// needs them, a whole-block write makes the arriving copy moot, a block never arrives twice, and
/// nothing reads an absent block by mistake.
/// </summary>
public class DiskAbsentTests
{
    private static byte[] Image(int blocks = 16, int seed = 3)
    {
        var b = new byte[blocks * Disk.BlockSize];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static byte[] Block(byte[] image, long b) => image.AsSpan((int)b * Disk.BlockSize, Disk.BlockSize).ToArray();

    [Fact]
    public void ReadsFetchAbsentBlocksInRunsAndAWholeBlockWriteNeedsNone()
    {
        var source = Image();
        var disk = Disk.Open(new MemoryDiskBacking(new byte[source.Length])); // the destination: zeros so far
        disk.MarkAbsent([2, 3, 4, 9]);
        Assert.Equal(4, disk.AwaitedBlocks);
        var asked = new List<(long, long)>();
        disk.BlockFetcher = (first, count) =>
        {
            asked.Add((first, count));
            for (long b = first; b < first + count; b++) Assert.True(disk.SupplyBlock(b, Block(source, b)));
            return true;
        };
        // A read of blocks 1..5 asks for the one run it lacks, then sees the source's bytes.
        Assert.True(disk.EnsureReadable(Disk.BlockSize + 7, 4 * Disk.BlockSize));
        Assert.Equal([(2L, 3L)], asked);
        var read = new byte[3 * Disk.BlockSize];
        disk.Read(2 * Disk.BlockSize, read);
        Assert.Equal(source.AsSpan(2 * Disk.BlockSize, 3 * Disk.BlockSize).ToArray(), read);

        // A write covering block 9 whole needs nothing first; its copy, arriving later, is checked off but not applied.
        Assert.True(disk.EnsureWritable(9 * Disk.BlockSize, Disk.BlockSize));
        Assert.Single(asked);
        var mine = Enumerable.Repeat((byte)0x77, Disk.BlockSize).ToArray();
        disk.Write(9 * Disk.BlockSize, mine);
        Assert.False(disk.IsAbsent(9));
        Assert.True(disk.IsAwaited(9));
        Assert.True(disk.SupplyBlock(9, Block(source, 9)));
        var block = new byte[Disk.BlockSize];
        disk.ReadBlock(9, block);
        Assert.Equal(mine, block);

        Assert.Equal(0, disk.AwaitedBlocks);
        Assert.False(disk.HasAbsentBlocks);
        Assert.False(disk.SupplyBlock(3, Block(source, 3))); // not awaited any more: sent twice
    }

    [Fact]
    public void APartialWriteFetchesItsEdgeBlocksAndAnAbsentBlockIsNeverReadByMistake()
    {
        var source = Image();
        var disk = Disk.Open(new MemoryDiskBacking(new byte[source.Length]));
        disk.MarkAbsent([5, 6, 7]);
        Assert.Throws<InvalidOperationException>(() => disk.Read(6 * Disk.BlockSize, new byte[10]));
        Assert.Throws<InvalidOperationException>(() => disk.Write(5 * Disk.BlockSize + 1, new byte[10]));

        bool linkUp = false;
        var asked = new List<long>();
        disk.BlockFetcher = (first, count) =>
        {
            for (long b = first; b < first + count; b++) asked.Add(b);
            if (!linkUp) return false;
            for (long b = first; b < first + count; b++) disk.SupplyBlock(b, Block(source, b));
            return true;
        };
        // Sectors 5.5 .. 7.5 blocks: blocks 5 and 7 in part (needed first), block 6 whole (not).
        Assert.False(disk.EnsureWritable(5 * Disk.BlockSize + 2048, 2 * Disk.BlockSize)); // the link is down: cannot come now
        Assert.True(disk.IsAbsent(5));
        linkUp = true;
        asked.Clear();
        Assert.True(disk.EnsureWritable(5 * Disk.BlockSize + 2048, 2 * Disk.BlockSize));
        Assert.Equal([5L, 7L], asked);
        Assert.True(disk.IsAbsent(6));
        disk.Write(5 * Disk.BlockSize + 2048, new byte[2 * Disk.BlockSize]);
        Assert.False(disk.IsAbsent(6)); // overwritten whole; its copy is still awaited
        Assert.True(disk.IsAwaited(6));
    }

    [Fact]
    public void ASaveOrSnapshotBringsInEveryAbsentBlockFirstOrRefuses()
    {
        var source = Image();
        var disk = Disk.Open(new MemoryDiskBacking(new byte[source.Length]));
        disk.MarkAbsent([1, 8]);
        Assert.Throws<InvalidOperationException>(() => disk.Snapshot()); // no fetcher: cannot come
        disk.BlockFetcher = (first, count) =>
        {
            for (long b = first; b < first + count; b++) disk.SupplyBlock(b, Block(source, b));
            return true;
        };
        var snap = disk.Snapshot();
        Assert.False(disk.HasAbsentBlocks);
        var block = new byte[Disk.BlockSize];
        snap.ReadBlock(8, block);
        Assert.Equal(Block(source, 8), block);
    }
}
