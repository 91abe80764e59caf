using System.Buffers.Binary;
using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Devices.Virtio.Block;
using LiveMigration.Guest.State;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Devices.Virtio;

/// <summary>
/// virtio-blk: requests wait in flight until the port completes them (the data a read returns is
/// the disk's at completion), writes land in the overlay and reach the store only on flush, bad
/// requests get IOERR/UNSUPP, and the disk's state saves, restores and digests with the machine.
/// </summary>
public class VirtioBlkTests
{
    private const int Slot = 7; // the only device: the top slot
    private const ulong Header = 0x8001_0000, Data = 0x8002_0000, Status = 0x8003_0000;
    private const int ImageBlocks = 64; // 256 KiB

    private static byte[] Image(int seed = 1)
    {
        var bytes = new byte[ImageBlocks * Disk.BlockSize];
        new Random(seed).NextBytes(bytes);
        bytes.AsSpan(8 * Disk.BlockSize, Disk.BlockSize).Clear(); // one zero block
        return bytes;
    }

    private static (Machine M, VirtioDriver D, MemoryDiskBacking Store) NewMachine(byte[]? image = null, bool readOnly = false)
    {
        var store = new MemoryDiskBacking(image ?? Image());
        var m = new Machine(new MachineConfig { MemorySize = 1 << 20, Virtio = VirtioDevices.Block }, new TestHostPort(), compileBlocks: false);
        m.InsertDisk(Disk.Open(store, readOnly));
        var d = new VirtioDriver(m, Slot);
        d.Initialise(VirtioFeatures.Version1 | VirtioBlk.FeatureFlush, 1);
        return (m, d, store);
    }

    /// <summary>Puts one request (header, optional data, status) on the queue and notifies; it is then in flight.</summary>
    private static void Submit(VirtioDriver d, uint type, ulong sector, uint dataBytes, bool deviceWrites)
    {
        var h = new byte[16];
        BinaryPrimitives.WriteUInt32LittleEndian(h, type);
        BinaryPrimitives.WriteUInt64LittleEndian(h.AsSpan(8), sector);
        d.Machine.Memory.Write(Header, h);
        d.Machine.Memory.Write(Status, [0xEE]);
        if (dataBytes == 0) d.Offer(0, (Header, 16, false), (Status, 1, true));
        else d.Offer(0, (Header, 16, false), (Data, dataBytes, deviceWrites), (Status, 1, true));
        d.Notify(0);
    }

    private static byte Request(VirtioDriver d, uint type, ulong sector, uint dataBytes, bool deviceWrites)
    {
        Submit(d, type, sector, dataBytes, deviceWrites);
        d.Machine.CompleteBlockRequests(d.Machine.BlockRequestsInFlight);
        return StatusByte(d.Machine);
    }

    private static byte StatusByte(Machine m)
    {
        var s = new byte[1];
        m.Memory.Read(Status, s);
        return s[0];
    }

    private static byte[] Ram(Machine m, ulong address, int n)
    {
        var b = new byte[n];
        m.Memory.Read(address, b);
        return b;
    }

    [Fact]
    public void OffersCapacityFlushAndTheRoFlagOfAReadOnlyDisk()
    {
        var (m, d, _) = NewMachine();
        using var _m = m;
        Assert.Equal((uint)VirtioDeviceId.Block, d.Read(0x008));
        Assert.Equal((uint)(ImageBlocks * Disk.BlockSize / 512), d.Read(0x100)); // capacity, low word
        Assert.Equal(0u, d.Read(0x104));
        d.Write(0x014, 0);
        Assert.NotEqual(0u, d.Read(0x010) & (uint)VirtioBlk.FeatureFlush);
        Assert.Equal(0u, d.Read(0x010) & (uint)VirtioBlk.FeatureRo);

        var (ro, rd, _) = NewMachine(readOnly: true);
        using var _ro = ro;
        rd.Write(0x014, 0);
        Assert.NotEqual(0u, rd.Read(0x010) & (uint)VirtioBlk.FeatureRo);
    }

    [Fact]
    public void ReadsTheImageAndWritesStayInTheOverlayUntilFlushed()
    {
        var image = Image();
        var original = image.ToArray();
        var (m, d, store) = NewMachine(image);
        using var _ = m;

        Assert.Equal(VirtioBlk.StatusOk, Request(d, VirtioBlk.TypeIn, 3, 1024, deviceWrites: true));
        Assert.Equal(original.AsSpan(3 * 512, 1024).ToArray(), Ram(m, Data, 1024));
        var (_, length) = d.UsedElement(0, 0);
        Assert.Equal(1024u + 1, length); // data in plus the status byte

        // A write that straddles two blocks, unaligned: read-modify-write of both.
        var payload = new byte[1536];
        new Random(9).NextBytes(payload);
        m.Memory.Write(Data, payload);
        Assert.Equal(VirtioBlk.StatusOk, Request(d, VirtioBlk.TypeOut, 7, 1536, deviceWrites: false));
        Assert.Equal(original, store.Bytes); // nothing reached the store yet
        Assert.Equal(2, m.Disk!.UnflushedBlocks);

        m.Memory.Write(Data, new byte[1536]);
        Assert.Equal(VirtioBlk.StatusOk, Request(d, VirtioBlk.TypeIn, 7, 1536, deviceWrites: true));
        Assert.Equal(payload, Ram(m, Data, 1536));

        Assert.Equal(VirtioBlk.StatusOk, Request(d, VirtioBlk.TypeFlush, 0, 0, false));
        Assert.Equal(payload, store.Bytes.AsSpan(7 * 512, 1536).ToArray());
        Assert.Equal(original.AsSpan(0, 7 * 512).ToArray(), store.Bytes.AsSpan(0, 7 * 512).ToArray());
        Assert.Equal(1, store.Syncs);
        Assert.Equal(0, m.Disk.UnflushedBlocks);
    }

    [Fact]
    public void RequestsWaitInFlightAndAReadSeesTheDiskWhenItCompletes()
    {
        var (m, d, _) = NewMachine();
        using var _m = m;
        var payload = Enumerable.Repeat((byte)0x5A, 512).ToArray();
        m.Memory.Write(Data, payload);
        Submit(d, VirtioBlk.TypeOut, 0, 512, deviceWrites: false);
        Assert.Equal(1, m.BlockRequestsInFlight);
        Assert.Equal(0, d.UsedIdx(0)); // not completed: no used element, no interrupt
        Assert.Equal(0u, d.Read(0x060));
        Assert.Equal(0xEE, StatusByte(m));

        m.CompleteBlockRequests(1);
        Assert.Equal(1, d.UsedIdx(0));
        Assert.Equal(VirtioMmio.InterruptUsedBuffer, d.Read(0x060));
        Assert.Equal(VirtioBlk.StatusOk, StatusByte(m));
        Assert.Throws<ArgumentOutOfRangeException>(() => m.CompleteBlockRequests(1));
    }

    /// <summary>
    /// Post-copy: a read of a block that has not arrived is not served until it has; when it cannot
    /// come now the machine stops before completing it (PageUnavailable) and the request stays in
    /// flight; the next run fetches it and the guest reads the arrived bytes.
    /// </summary>
    [Fact]
    public void ARequestForAnAbsentBlockWaitsForItAndTheMachineStopsWhenItCannotCome()
    {
        var (m, d, _) = NewMachine();
        using var _m = m;
        var disk = m.Disk!;
        disk.MarkAbsent([3]);
        var arrived = Enumerable.Repeat((byte)0xC3, Disk.BlockSize).ToArray();
        bool linkUp = false;
        int asked = 0;
        disk.BlockFetcher = (first, count) =>
        {
            asked++;
            Assert.Equal((3L, 1L), (first, count));
            return linkUp && disk.SupplyBlock(3, arrived);
        };
        Submit(d, VirtioBlk.TypeIn, 3 * 8 + 2, 1024, deviceWrites: true); // sectors 26..27: inside block 3
        Assert.Equal(StopReason.PageUnavailable, m.Run(m.Icount + 1));
        Assert.Equal(1, asked);
        Assert.Equal(1, m.BlockRequestsInFlight);
        Assert.Equal(0xEE, StatusByte(m));

        linkUp = true;
        m.Run(m.Icount + 1);
        Assert.Equal(2, asked);
        Assert.Equal(0, m.BlockRequestsInFlight);
        Assert.Equal(VirtioBlk.StatusOk, StatusByte(m));
        Assert.Equal(arrived.AsSpan(0, 1024).ToArray(), Ram(m, Data, 1024));
        Assert.False(disk.HasAbsentBlocks);
    }

    [Fact]
    public void BadRequestsGetIoErrOrUnsupported()
    {
        var (m, d, _) = NewMachine();
        using var _m = m;
        ulong sectors = ImageBlocks * Disk.BlockSize / 512;
        Assert.Equal(VirtioBlk.StatusIoErr, Request(d, VirtioBlk.TypeIn, sectors, 512, true));       // past the end
        Assert.Equal(VirtioBlk.StatusIoErr, Request(d, VirtioBlk.TypeIn, sectors - 1, 1024, true));  // runs over the end
        Assert.Equal(VirtioBlk.StatusIoErr, Request(d, VirtioBlk.TypeIn, 0, 100, true));             // not whole sectors
        Assert.Equal(VirtioBlk.StatusUnsupported, Request(d, 99, 0, 0, false));
        Assert.Equal(VirtioBlk.StatusOk, Request(d, VirtioBlk.TypeGetId, 0, 20, true));
        Assert.Equal(new byte[20], Ram(m, Data, 20)); // no serial: empty, as QEMU's

        var (ro, rd, store) = NewMachine(readOnly: true);
        using var _ro = ro;
        var before = store.Bytes.ToArray();
        Assert.Equal(VirtioBlk.StatusIoErr, Request(rd, VirtioBlk.TypeOut, 0, 512, false));
        Assert.Equal(VirtioBlk.StatusOk, Request(rd, VirtioBlk.TypeFlush, 0, 0, false));
        Assert.Equal(before, store.Bytes);
        Assert.Equal(0L, ro.Disk!.OverlayBlocks);
    }

    [Fact]
    public void WriteZeroesZeroesItsRanges()
    {
        var (m, d, _) = NewMachine();
        using var _m = m;
        var range = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(range, 2);
        BinaryPrimitives.WriteUInt32LittleEndian(range.AsSpan(8), 9);
        m.Memory.Write(Data, range);
        Assert.Equal(VirtioBlk.StatusOk, Request(d, VirtioBlk.TypeWriteZeroes, 0, 16, false));
        Assert.Equal(VirtioBlk.StatusOk, Request(d, VirtioBlk.TypeIn, 1, 11 * 512, true));
        var back = Ram(m, Data, 11 * 512);
        Assert.NotEqual(new byte[512], back[..512]);
        Assert.Equal(new byte[9 * 512], back[512..(10 * 512)]);
        Assert.NotEqual(new byte[512], back[(10 * 512)..]);
    }

    [Fact]
    public void DigestFollowsTheContentsAndReturnsWhenTheyDo()
    {
        var (m, d, _) = NewMachine();
        using var _m = m;
        ulong before = m.ComputeDigest(), contents = m.Disk!.ContentDigest;
        Assert.Equal(VirtioBlk.StatusOk, Request(d, VirtioBlk.TypeIn, 0, 512, true));
        var old = Ram(m, Data, 512);
        m.Memory.Write(Data, Enumerable.Repeat((byte)1, 512).ToArray());
        Assert.Equal(VirtioBlk.StatusOk, Request(d, VirtioBlk.TypeOut, 0, 512, false));
        Assert.NotEqual(contents, m.Disk.ContentDigest);
        m.Memory.Write(Data, old);
        Assert.Equal(VirtioBlk.StatusOk, Request(d, VirtioBlk.TypeOut, 0, 512, false));
        Assert.Equal(contents, m.Disk.ContentDigest); // same contents, same disk digest (queue state moved on)
        Assert.NotEqual(before, m.ComputeDigest());
    }

    [Fact]
    public void SnapshotKeepsTheDiskAtItsIcountWhileTheGuestWritesAndFlushes()
    {
        var image = Image();
        var (m, d, store) = NewMachine(image);
        using var _m = m;
        var original = store.Bytes.ToArray();
        using var snapshot = m.TakeSnapshot();

        m.Memory.Write(Data, Enumerable.Repeat((byte)0x77, 4096).ToArray());
        Assert.Equal(VirtioBlk.StatusOk, Request(d, VirtioBlk.TypeOut, 0, 4096, false));
        Assert.Equal(VirtioBlk.StatusOk, Request(d, VirtioBlk.TypeFlush, 0, 0, false));
        Assert.NotEqual(original.AsSpan(0, 4096).ToArray(), store.Bytes.AsSpan(0, 4096).ToArray()); // committed

        var block = new byte[Disk.BlockSize];
        snapshot.Disk!.ReadBlock(0, block);
        Assert.Equal(original.AsSpan(0, 4096).ToArray(), block); // the base, kept for the snapshot

        // The snapshot's checkpoint restores the disk as it was, into a machine on the same base.
        var w = new StateWriter();
        snapshot.Save(w);
        ulong liveDigest = m.ComputeDigest();
        var restored = RestoreInto(m, w.ToArray());
        using var _r = restored;
        Assert.Equal(snapshot.Digest, restored.ComputeDigest());
        Assert.NotEqual(liveDigest, restored.ComputeDigest());
        restored.Disk!.ReadBlock(0, block);
        Assert.Equal(original.AsSpan(0, 4096).ToArray(), block);
    }

    /// <summary>A second machine whose disk is the first one's (same base, the store as it is now), restored from <paramref name="state"/>.</summary>
    private static Machine RestoreInto(Machine like, byte[] state, Disk? disk = null)
    {
        var m = new Machine(like.Config, new TestHostPort(), compileBlocks: false);
        m.InsertDisk(disk ?? like.Disk!);
        m.RestoreState(new StateReader(state));
        return m;
    }

    [Fact]
    public void InFlightRequestsTravelWithTheStateAndCompleteAfterRestore()
    {
        var image = Image();
        var (m, d, _) = NewMachine(image.ToArray());
        using var _m = m;
        Submit(d, VirtioBlk.TypeIn, 16, 2048, deviceWrites: true);
        var w = new StateWriter();
        m.SaveState(w);

        var (other, _, _) = NewMachine(image.ToArray());
        using var _o = other;
        other.RestoreState(new StateReader(w.ToArray()));
        Assert.Equal(m.ComputeDigest(), other.ComputeDigest());
        Assert.Equal(1, other.BlockRequestsInFlight);
        other.CompleteBlockRequests(1);
        Assert.Equal(VirtioBlk.StatusOk, StatusByte(other));
        Assert.Equal(image.AsSpan(16 * 512, 2048).ToArray(), Ram(other, Data, 2048));
    }

    [Fact]
    public void RestoreOntoAnotherImageIsRefusedBeforeAnythingChanges()
    {
        var (m, d, _) = NewMachine(Image(1));
        using var _m = m;
        m.Memory.Write(Data, Enumerable.Repeat((byte)3, 512).ToArray());
        Assert.Equal(VirtioBlk.StatusOk, Request(d, VirtioBlk.TypeOut, 0, 512, false));
        var w = new StateWriter();
        m.SaveState(w);

        var (other, _, _) = NewMachine(Image(2));
        using var _o = other;
        ulong before = other.ComputeDigest();
        var e = Assert.Throws<InvalidDataException>(() => other.RestoreState(new StateReader(w.ToArray())));
        Assert.Contains("relative to image", e.Message);
        Assert.Equal(before, other.ComputeDigest());

        // A corrupted block is caught by the digest the section carries.
        var bytes = w.ToArray();
        int disk = bytes.AsSpan().LastIndexOf("DISK"u8);
        bytes[^10] ^= 0xFF; // inside the last block's data
        var (same, _, _) = NewMachine(Image(1));
        using var _s = same;
        ulong sameBefore = same.ComputeDigest();
        Assert.True(disk > 0);
        var e2 = Assert.Throws<InvalidDataException>(() => same.RestoreState(new StateReader(bytes)));
        Assert.Contains("digest", e2.Message);
        Assert.Equal(sameBefore, same.ComputeDigest());
    }

    [Fact]
    public void MachineWithoutADiskSavesNoDiskSection()
    {
        using var m = new Machine(new MachineConfig { MemorySize = 1 << 20 }, new TestHostPort(), compileBlocks: false);
        var w = new StateWriter();
        m.SaveState(w);
        Assert.Equal(-1, w.ToArray().AsSpan().IndexOf("DISK"u8));
        Assert.Throws<InvalidOperationException>(() => m.InsertDisk(Disk.Open(new MemoryDiskBacking(Image()))));
    }
}
