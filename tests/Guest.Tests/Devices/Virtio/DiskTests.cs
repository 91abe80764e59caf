using LiveMigration.Guest.Devices.Virtio.Block;

namespace LiveMigration.Guest.Tests.Devices.Virtio;

/// <summary>The disk state on its own: overlay, hashes, identity, copy-on-write snapshots and commits.</summary>
public class DiskTests
{
    private static byte[] Image(int blocks = 16, int seed = 5)
    {
        var b = new byte[blocks * Disk.BlockSize];
        new Random(seed).NextBytes(b);
        return b;
    }

    [Fact]
    public void IdentityNamesTheContentsAndHashesFollowWrites()
    {
        var a = Disk.Open(new MemoryDiskBacking(Image()));
        var b = Disk.Open(new MemoryDiskBacking(Image()));
        var c = Disk.Open(new MemoryDiskBacking(Image(seed: 6)));
        Assert.Equal(a.BaseIdentity, b.BaseIdentity);
        Assert.NotEqual(a.BaseIdentity, c.BaseIdentity);
        Assert.Equal(a.BaseIdentity, a.CurrentIdentity());

        a.Write(100, [1, 2, 3]);
        Assert.NotEqual(a.BaseIdentity, a.CurrentIdentity());
        Assert.NotEqual(b.ContentDigest, a.ContentDigest);
        var block = new byte[Disk.BlockSize];
        b.ReadBlock(0, block);
        a.WriteBlock(0, block);
        Assert.Equal(b.ContentDigest, a.ContentDigest);
        Assert.Equal(b.CurrentIdentity(), a.CurrentIdentity());
        Assert.Equal(1L, a.OverlayBlocks);
    }

    [Fact]
    public void SnapshotSharesBlocksUntilTheNextWrite()
    {
        var image = Image();
        var disk = Disk.Open(new MemoryDiskBacking(image.ToArray()));
        disk.Write(0, new byte[Disk.BlockSize * 2]); // two zero blocks in the overlay
        var snap = disk.Snapshot();
        disk.Write(10, [9]);
        var block = new byte[Disk.BlockSize];
        snap.ReadBlock(0, block);
        Assert.Equal(new byte[Disk.BlockSize], block);
        disk.ReadBlock(0, block);
        Assert.Equal(9, block[10]);
        snap.ReadBlock(5, block);
        Assert.Equal(image.AsSpan(5 * Disk.BlockSize, Disk.BlockSize).ToArray(), block);
        Assert.NotEqual(snap.ContentDigest, disk.ContentDigest);
    }

    [Fact]
    public void FlushCommitsOnlyWhatIsUnflushedAndAReadOnlyStoreNever()
    {
        var store = new MemoryDiskBacking(Image());
        var disk = Disk.Open(store);
        disk.Write(Disk.BlockSize * 3 + 5, [0xAA]);
        Assert.Equal(1, disk.UnflushedBlocks);
        disk.Flush();
        Assert.Equal(0xAA, store.Bytes[Disk.BlockSize * 3 + 5]);
        Assert.Equal(1, store.Syncs);
        disk.Flush(); // nothing new: no sync
        Assert.Equal(1, store.Syncs);

        var image = Image();
        var ro = new MemoryDiskBacking(image.ToArray(), writable: false);
        var replay = Disk.Open(ro);
        Assert.False(replay.Commits);
        replay.Write(0, [1]);
        replay.Flush();
        Assert.Equal(image, ro.Bytes);
    }

    [Fact]
    public void RevertToASnapshotRestoresEveryBlockWrittenSince()
    {
        var disk = Disk.Open(new MemoryDiskBacking(Image()));
        disk.Write(5 * Disk.BlockSize + 7, [9, 9]);
        var c0 = disk.Snapshot();
        ulong at = disk.ContentDigest, identity = disk.CurrentIdentity();
        disk.Write(5 * Disk.BlockSize, [1]);
        disk.WriteZeroes(2 * Disk.BlockSize, 3 * Disk.BlockSize);
        disk.Write(9 * Disk.BlockSize, [4]);
        disk.Write(9 * Disk.BlockSize, [(byte)(Image()[9 * Disk.BlockSize])]); // back to what it was: unchanged, not reverted
        Assert.Equal(4, disk.RevertTo(c0));
        Assert.Equal(at, disk.ContentDigest);
        Assert.Equal(identity, disk.CurrentIdentity());
        Assert.Equal(0, disk.RevertTo(c0));
        Assert.Throws<ArgumentException>(() => disk.RevertTo(Disk.Open(new MemoryDiskBacking(Image())).Snapshot()));
    }

    [Fact]
    public void HeldCommitsWriteNothingUntilReleasedThenEverything()
    {
        var store = new MemoryDiskBacking(Image());
        var disk = Disk.Open(store);
        disk.Write(0, [1, 2, 3]);
        disk.CommitsHeld = true;
        disk.Write(3 * Disk.BlockSize, [4]);
        disk.Flush();
        Assert.Equal(0, store.Syncs);
        Assert.Equal(Image()[0], store.Bytes[0]);
        disk.CommitsHeld = false;
        disk.Flush();
        Assert.Equal(1, store.Syncs);
        Assert.Equal(new byte[] { 1, 2, 3 }, store.Bytes[..3]);
        Assert.Equal(4, store.Bytes[3 * Disk.BlockSize]);
        Assert.Equal(0, disk.UnflushedBlocks);
    }

    [Fact]
    public void BadImageSizesAreRefusedInOneLine()
    {
        Assert.Contains("not a multiple of 4 KiB", Assert.Throws<InvalidDataException>(() => Disk.Open(new MemoryDiskBacking(new byte[1000]))).Message);
        Assert.Contains("empty", Assert.Throws<InvalidDataException>(() => Disk.Open(new MemoryDiskBacking([]))).Message);
    }
}
