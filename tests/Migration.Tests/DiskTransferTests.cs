using LiveMigration.Guest.Devices.Virtio.Block;
using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Protocol;
using Google.Protobuf;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

/// <summary>
/// dsync-style disk transfer: against a base the destination names only differing blocks cross
/// (≤ 2 % of the image when 1 % of blocks differ), zero blocks are markers, a flipped block is
/// refused before anything is written, and the assembled image appears only on commit.
/// </summary>
public class DiskTransferTests(ITestOutputHelper log)
{
    private const int Blocks = 1024; // a 4 MiB image

    private static byte[] Image(int seed = 3)
    {
        var b = new byte[Blocks * Disk.BlockSize];
        new Random(seed).NextBytes(b);
        b.AsSpan(100 * Disk.BlockSize, 50 * Disk.BlockSize).Clear();
        return b;
    }

    /// <summary>The source's disk: the image with <paramref name="changed"/> blocks rewritten (1 % by default).</summary>
    private static Disk SourceDisk(int changed = Blocks / 100)
    {
        var disk = Disk.Open(new MemoryDiskBacking(Image()));
        var rng = new Random(4);
        var data = new byte[Disk.BlockSize];
        for (int i = 0; i < changed; i++)
        {
            rng.NextBytes(data);
            disk.WriteBlock(rng.Next(Blocks), data);
        }
        return disk;
    }

    private static long WireBytes(IEnumerable<DiskBlocks> messages) => messages.Sum(m => (long)m.CalculateSize());

    private (long Bytes, byte[] Image) Transfer(Disk source, byte[]? destinationBase, string name)
    {
        var snapshot = source.Snapshot();
        IReadOnlyList<ulong>? baseHashes = destinationBase == null ? null : DiskTransfer.DescribeBase("base", Disk.Open(new MemoryDiskBacking(destinationBase.ToArray()))).BlockHashes;
        var blocks = DiskTransfer.Differing(snapshot.BlockHashes, baseHashes);
        var messages = DiskTransfer.Encode(snapshot, blocks).ToList();
        var target = new MemoryDiskBacking(destinationBase?.ToArray() ?? new byte[Blocks * Disk.BlockSize]);
        foreach (var m in messages) DiskTransfer.Apply(m, target);
        long bytes = WireBytes(messages);
        log.WriteLine($"{name}: {blocks.Count} of {Blocks} blocks, {bytes} bytes on the wire ({100.0 * bytes / (Blocks * Disk.BlockSize):F2} % of the {Blocks * Disk.BlockSize >> 20} MiB image)");
        return (bytes, target.Bytes);
    }

    [Fact]
    public void AgainstABaseOnlyDifferingBlocksCrossAndTheResultIsTheSourceDisk()
    {
        var source = SourceDisk();
        var (fresh, freshImage) = Transfer(source, null, "fresh destination");
        var (withBase, baseImage) = Transfer(source, Image(), "destination with a base differing in 1 % of blocks");

        Assert.Equal(source.CurrentIdentity(), Disk.Open(new MemoryDiskBacking(freshImage)).CurrentIdentity());
        Assert.Equal(source.CurrentIdentity(), Disk.Open(new MemoryDiskBacking(baseImage)).CurrentIdentity());
        Assert.Equal(source.ContentDigest, Disk.Open(new MemoryDiskBacking(baseImage)).ContentDigest);
        Assert.True(withBase <= Blocks * Disk.BlockSize * 2 / 100, $"{withBase} bytes is more than 2 % of the image");
        Assert.True(fresh > Blocks * Disk.BlockSize * 90L / 100, "a fresh destination receives (almost) every byte of random data");
    }

    [Fact]
    public void ZeroBlocksAreMarkersAndASecondPassSendsOnlyWhatChanged()
    {
        var disk = Disk.Open(new MemoryDiskBacking(new byte[Blocks * Disk.BlockSize]));
        var first = disk.Snapshot();
        var messages = DiskTransfer.Encode(first, DiskTransfer.Differing(first.BlockHashes, null)).ToList();
        Assert.All(messages, m => Assert.Empty(m.Blocks));
        Assert.Equal(Blocks, messages.Sum(m => m.ZeroBlocks.Count));
        Assert.True(WireBytes(messages) < 4 * Blocks, "zero blocks cost a few bytes each");

        disk.Write(5 * Disk.BlockSize + 1, [7]);
        var second = disk.Snapshot();
        Assert.Equal([5L], DiskTransfer.Changed(first.BlockHashes, second.BlockHashes));
    }

    [Fact]
    public void AFlippedBlockIsRefusedBeforeAnythingIsWritten()
    {
        var source = SourceDisk(changed: 0);
        var snapshot = source.Snapshot();
        var message = DiskTransfer.Encode(snapshot, [0, 1, 2]).Single();
        message.Hashes[1] ^= 1; // what a flipped bit in the block makes of it on arrival
        var target = new MemoryDiskBacking(new byte[Blocks * Disk.BlockSize]);
        var e = Assert.Throws<InvalidDataException>(() => DiskTransfer.Apply(message, target));
        Assert.Contains("block 1 does not match its hash", e.Message);
        Assert.Equal(new byte[Blocks * Disk.BlockSize], target.Bytes);

        var beyond = new DiskBlocks();
        beyond.ZeroBlocks.Add(Blocks);
        Assert.Throws<InvalidDataException>(() => DiskTransfer.Apply(beyond, target));
    }

    [Fact]
    public void AnAssembledImageAppearsOnlyOnCommit()
    {
        string dir = Directory.CreateTempSubdirectory("lm-disk-").FullName;
        try
        {
            string basePath = Path.Combine(dir, "base.img"), target = Path.Combine(dir, "guest.img");
            File.WriteAllBytes(basePath, Image());
            var source = SourceDisk();
            var snapshot = source.Snapshot();
            var baseHashes = DiskTransfer.DescribeBase("base", Disk.Open(new MemoryDiskBacking(Image()))).BlockHashes;

            using (var aborted = IncomingDiskImage.Begin(target, basePath, Blocks * Disk.BlockSize))
            {
                DiskTransfer.Apply(DiskTransfer.Encode(snapshot, DiskTransfer.Differing(snapshot.BlockHashes, baseHashes)).First(), aborted.Backing);
            } // killed before GO
            Assert.False(File.Exists(target));
            Assert.Equal([basePath], Directory.GetFiles(dir));

            using var incoming = IncomingDiskImage.Begin(target, basePath, Blocks * Disk.BlockSize);
            foreach (var m in DiskTransfer.Encode(snapshot, DiskTransfer.Differing(snapshot.BlockHashes, baseHashes))) DiskTransfer.Apply(m, incoming.Backing);
            Assert.False(File.Exists(target));
            incoming.Commit();
            Assert.Equal(source.CurrentIdentity(), Disk.Open(new MemoryDiskBacking(File.ReadAllBytes(target))).CurrentIdentity());
            Assert.Equal(Image(), File.ReadAllBytes(basePath)); // the base is never written
        }
        finally { Directory.Delete(dir, true); }
    }
}
