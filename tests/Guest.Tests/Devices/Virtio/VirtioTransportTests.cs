using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Memory;
using LiveMigration.Guest.State;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Devices.Virtio;

/// <summary>The virtio-mmio v2 transport and its split virtqueues, driven by hand-built queues in guest memory (virtio-rng behind it).</summary>
public class VirtioTransportTests
{
    private const int RngSlot = 7, BalloonSlot = 6;

    private static Machine NewMachine(IHostPort? port = null, VirtioDevices devices = VirtioDevices.Rng | VirtioDevices.Balloon) =>
        new(new MachineConfig { MemorySize = 1 << 20, Virtio = devices }, port ?? new TestHostPort(), compileBlocks: false);

    private static bool IrqPending(Machine m, int source)
    {
        Assert.True(m.Plic.Read(0x1000 + (ulong)(source / 32 * 4), 4, out ulong pending));
        return (pending & (1UL << (source % 32))) != 0;
    }

    [Fact]
    public void BareMetalMachineHasNoTransports()
    {
        using var m = new Machine(new MachineConfig { MemorySize = 1 << 20 }, NullHostPort.Instance);
        Assert.Null(m.Virtio);
        Assert.Null(m.FindDevice(VirtioMmio.FirstSlotBase));
    }

    [Fact]
    public void SlotsIdentifyAsQemuFillsThem()
    {
        using var m = NewMachine();
        for (int slot = 0; slot < VirtioMmio.SlotCount; slot++)
        {
            var d = new VirtioDriver(m, slot);
            Assert.Equal(VirtioMmio.MagicValue, d.Read(0x000));
            Assert.Equal(2u, d.Read(0x004));
            uint expected = slot switch { RngSlot => 4, BalloonSlot => 5, _ => 0 };
            Assert.Equal(expected, d.Read(0x008));
        }
        Assert.Same(m.Virtio, m.FindDevice(0x1000_8000));
        Assert.Same(m.Virtio!.Rng, m.Virtio.Slot(RngSlot).Device);
        Assert.Equal(8, VirtioMmio.SlotIrq(RngSlot));
    }

    [Fact]
    public void FeatureNegotiationNeedsVersion1AndASubset()
    {
        using var m = NewMachine();
        var d = new VirtioDriver(m, RngSlot);
        d.Write(0x014, 1);
        Assert.Equal(1u, d.Read(0x010)); // VERSION_1 is bit 32
        d.Write(0x014, 0);
        Assert.Equal(1u << 28, d.Read(0x010)); // INDIRECT_DESC

        d.Write(0x070, 3);
        d.Write(0x024, 0); d.Write(0x020, 0);
        d.Write(0x024, 1); d.Write(0x020, 0); // legacy driver: no VERSION_1
        d.Write(0x070, 3 | 8);
        Assert.Equal(0u, d.Read(0x070) & 8);

        d.Write(0x070, 0);
        d.Write(0x070, 3);
        d.Write(0x024, 0); d.Write(0x020, 1u << 5); // a feature rng does not offer
        d.Write(0x024, 1); d.Write(0x020, 1);
        d.Write(0x070, 3 | 8);
        Assert.Equal(0u, d.Read(0x070) & 8);

        d.Initialise(VirtioFeatures.Version1, 1);
        Assert.Equal(VirtioFeatures.Version1, m.Virtio!.Slot(RngSlot).DriverFeatures);
    }

    [Fact]
    public void RngFillsAChainFromTheHostPortAndInterrupts()
    {
        var port = new TestHostPort { Entropy = 0xC3A5 };
        using var m = NewMachine(port);
        var d = new VirtioDriver(m, RngSlot);
        d.Initialise(VirtioFeatures.Version1, 1);
        const ulong buf1 = 0x8004_0000, buf2 = 0x8004_1000;
        ushort head = d.Offer(0, (buf1, 6, true), (buf2, 10, true));
        Assert.False(IrqPending(m, 8));
        d.Notify(0);

        Assert.Equal(1, d.UsedIdx(0));
        Assert.Equal((head, 16u), d.UsedElement(0, 0));
        var got = new byte[16];
        m.Memory.Read(buf1, got.AsSpan(0, 6));
        m.Memory.Read(buf2, got.AsSpan(6, 10));
        for (int i = 0; i < 16; i++) Assert.Equal(i % 2 == 0 ? 0xA5 : 0xC3, got[i]);
        Assert.Equal(16, m.Virtio!.Rng!.BytesServed);

        Assert.Equal(VirtioMmio.InterruptUsedBuffer, d.Read(0x060));
        Assert.True(IrqPending(m, 8));
        d.Write(0x064, VirtioMmio.InterruptUsedBuffer);
        Assert.Equal(0u, d.Read(0x060));
        Assert.False(IrqPending(m, 8));
    }

    [Fact]
    public void IndirectDescriptorTable()
    {
        using var m = NewMachine();
        var d = new VirtioDriver(m, RngSlot);
        d.Initialise(VirtioFeatures.Version1 | VirtioFeatures.IndirectDesc, 1);
        const ulong table = 0x8005_0000, buf = 0x8004_0000;
        d.WriteDescriptor(table, 0, buf, 4, flags: 2 | 1, next: 1);
        d.WriteDescriptor(table, 1, buf + 0x100, 4, flags: 2, next: 0);
        d.WriteDescriptor(VirtioDriver.Desc(0), 0, table, 32, flags: 4, next: 0);
        d.Publish(0, 0);
        d.Notify(0);
        Assert.Equal((0u, 8u), d.UsedElement(0, 0));
        var b = new byte[4];
        m.Memory.Read(buf + 0x100, b);
        Assert.Equal([0x5A, 0x5A, 0x5A, 0x5A], b);
    }

    [Fact]
    public void NoInterruptWhenTheDriverSuppressesIt()
    {
        using var m = NewMachine();
        var d = new VirtioDriver(m, RngSlot);
        d.Initialise(VirtioFeatures.Version1, 1);
        m.Memory.Write(VirtioDriver.Avail(0), [1, 0]); // VIRTQ_AVAIL_F_NO_INTERRUPT
        d.Offer(0, (0x8004_0000, 8, true));
        d.Notify(0);
        Assert.Equal(1, d.UsedIdx(0));
        Assert.Equal(0u, d.Read(0x060));
    }

    [Theory]
    [InlineData(0x9000_0000UL, 8u, (ushort)2)]   // buffer outside RAM
    [InlineData(0x8004_0000UL, 8u, (ushort)3)]   // a descriptor loop (next = itself)
    public void MalformedChainSetsNeedsResetNotAHostException(ulong address, uint length, ushort flags)
    {
        using var m = NewMachine();
        var d = new VirtioDriver(m, RngSlot);
        d.Initialise(VirtioFeatures.Version1, 1);
        d.WriteDescriptor(VirtioDriver.Desc(0), 0, address, length, flags, next: 0);
        d.Publish(0, 0);
        d.Notify(0);
        Assert.NotEqual(0u, d.Read(0x070) & (uint)VirtioStatus.DeviceNeedsReset);
        Assert.Equal(0, d.UsedIdx(0));
        Assert.NotEqual(VirtqError.None, m.Virtio!.Slot(RngSlot).Queue(0).Error);
        // A reset brings the device back.
        d.Initialise(VirtioFeatures.Version1, 1);
        Assert.Equal(0u, d.Read(0x070) & (uint)VirtioStatus.DeviceNeedsReset);
    }

    [Fact]
    public void DmaGoesThroughTheWriteBarrier()
    {
        using var m = NewMachine();
        var d = new VirtioDriver(m, RngSlot);
        d.Initialise(VirtioFeatures.Version1, 1);
        const ulong buf = 0x8004_0000;
        int page = (int)((buf - GuestMemory.DefaultBase) >> GuestMemory.PageShift);
        m.Memory.Write(buf, [1, 2, 3, 4]);
        var client = m.Memory.CreateDirtyClient("test");
        var dirty = new List<int>();
        client.CollectAndClear(dirty); // starts all-dirty: clear it
        dirty.Clear();
        using var snapshot = m.Memory.CreateSnapshot();
        d.Offer(0, (buf, 4, true));
        d.Notify(0);

        client.CollectAndClear(dirty);
        Assert.Contains(page, dirty);
        var old = new byte[GuestMemory.PageSize];
        snapshot.ReadPage(page, old);
        Assert.Equal([1, 2, 3, 4], old[..4]); // the snapshot kept the page as it was before the DMA
        var now = new byte[4];
        m.Memory.Read(buf, now);
        Assert.Equal([0x5A, 0x5A, 0x5A, 0x5A], now);
    }

    [Fact]
    public void SaveRestoreRoundTripKeepsQueuesAndDigest()
    {
        using var a = NewMachine();
        var d = new VirtioDriver(a, RngSlot);
        d.Initialise(VirtioFeatures.Version1, 1);
        d.Offer(0, (0x8004_0000, 8, true));
        d.Notify(0);
        var w = new StateWriter();
        a.SaveState(w);

        using var b = NewMachine();
        b.RestoreState(new StateReader(w.ToArray()));
        Assert.Equal(a.ComputeDigest(), b.ComputeDigest());
        var q = b.Virtio!.Slot(RngSlot).Queue(0);
        Assert.True(q.Ready);
        Assert.Equal(1, q.LastAvail);
        Assert.Equal(1, q.UsedIdx);

        // The restored device goes on serving where the first one was.
        d.Machine = b;
        d.Offer(0, (0x8004_0100, 4, true));
        d.Notify(0);
        Assert.Equal(2, d.UsedIdx(0));
        Assert.Equal(12, b.Virtio.Rng!.BytesServed);
    }

    [Fact]
    public void RestoreRefusesAnotherDeviceSetAndAppliesNothing()
    {
        using var a = NewMachine();
        new VirtioDriver(a, BalloonSlot).Initialise(VirtioFeatures.Version1, 3);
        new VirtioDriver(a, RngSlot).Initialise(VirtioFeatures.Version1, 1);
        var w = new StateWriter();
        a.SaveState(w);

        using var rngOnly = NewMachine(devices: VirtioDevices.Rng);
        var e = Assert.Throws<InvalidDataException>(() => rngOnly.RestoreState(new StateReader(w.ToArray())));
        Assert.Contains("virtio devices", e.Message);

        // A corrupt queue size (not a power of two) is caught before any slot changes.
        using var b = NewMachine();
        byte[] state = w.ToArray();
        byte[] corrupt = CorruptFirstQueueSize(state);
        Assert.Throws<InvalidDataException>(() => b.RestoreState(new StateReader(corrupt)));
        foreach (int slot in new[] { BalloonSlot, RngSlot })
        {
            Assert.False(b.Virtio!.Slot(slot).Queue(0).Ready);
            Assert.Equal((VirtioStatus)0, b.Virtio.Slot(slot).Status);
        }
    }

    /// <summary>Slots save from slot 0 up, so the balloon (slot 6) comes first; its first queue's size follows the transport fields.</summary>
    private static byte[] CorruptFirstQueueSize(byte[] state)
    {
        int at = IndexOf(state, "VIRT"u8) + 4 + 2 + 4; // tag, version, length
        at += 4; // device set
        at += 4 * 7 + 8 + 4; // id, status, isr, generation, 3 selectors, driver features, queue count
        Assert.Equal(VirtioDriver.QueueSize, BitConverter.ToUInt16(state, at));
        var c = (byte[])state.Clone();
        BitConverter.GetBytes((ushort)12).CopyTo(c, at);
        return c;
    }

    private static int IndexOf(byte[] haystack, ReadOnlySpan<byte> needle)
    {
        int i = haystack.AsSpan().IndexOf(needle);
        Assert.True(i >= 0);
        return i;
    }
}
