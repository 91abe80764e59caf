using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Devices.Virtio.Balloon;
using LiveMigration.Guest.Memory;
using LiveMigration.Guest.State;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Devices.Virtio;

/// <summary>virtio-balloon: free page reporting makes pages free (zeroed, skipped by migration) until the guest writes them; inflate/deflate feed the machine balloon.</summary>
public class VirtioBalloonTests
{
    private const int Slot = 6;
    private const ulong Dram = GuestMemory.DefaultBase;

    private static Machine NewMachine() =>
        new(new MachineConfig { MemorySize = 1 << 20, Virtio = VirtioDevices.Rng | VirtioDevices.Balloon }, new TestHostPort(), compileBlocks: false);

    private static VirtioDriver Driver(Machine m)
    {
        var d = new VirtioDriver(m, Slot);
        d.Initialise(VirtioFeatures.Version1 | VirtioBalloon.FeatureReporting, 3);
        return d;
    }

    private static int Page(ulong address) => (int)((address - Dram) >> GuestMemory.PageShift);

    [Fact]
    public void OffersFreePageReporting()
    {
        using var m = NewMachine();
        var d = new VirtioDriver(m, Slot);
        d.Write(0x014, 0);
        Assert.NotEqual(0u, d.Read(0x010) & (uint)VirtioBalloon.FeatureReporting);
        Assert.Equal(0u, d.Read(0x100)); // num_pages: the host wants nothing back
    }

    [Fact]
    public void ReportedPagesAreZeroedAndFreeUntilWritten()
    {
        using var m = NewMachine();
        var d = Driver(m);
        const ulong run = 0x8002_0000; // 4 pages of data
        for (int i = 0; i < 4; i++) m.Memory.Write(run + (ulong)i * 4096, [0xAB, 0xCD]);
        d.Offer(VirtioBalloon.ReportingQueue, (run, 4 * 4096, true), (0x8006_0000, 2 * 4096, true));
        d.Notify(VirtioBalloon.ReportingQueue);

        Assert.Equal(1, d.UsedIdx(VirtioBalloon.ReportingQueue));
        for (int p = Page(run); p < Page(run) + 4; p++)
        {
            Assert.True(m.Balloon.IsFreePage(p));
            Assert.True(m.Memory.IsZeroPage(p));
        }
        Assert.True(m.Balloon.IsFreePage(Page(0x8006_1000)));
        Assert.Equal(6, m.Balloon.FreePageCount);
        Assert.Equal([(Page(run), 4), (Page(0x8006_0000), 2)], m.Balloon.FreeRanges());
        Assert.Equal(6, m.Virtio!.Balloon!.ReportedPages);

        // The guest takes a page back by storing to it: a real hart store, through the write barrier.
        GuestStore(m, run + 4096 + 8, 0x77);
        Assert.False(m.Balloon.IsFreePage(Page(run + 4096)));
        Assert.True(m.Balloon.IsFreePage(Page(run)));
        Assert.Equal(5, m.Balloon.FreePageCount);
    }

    [Fact]
    public void PartialPagesAtTheEdgesStayTheGuests()
    {
        using var m = NewMachine();
        var d = Driver(m);
        m.Memory.Write(0x8002_0000, [1]);
        m.Memory.Write(0x8002_2000, [1]);
        d.Offer(VirtioBalloon.ReportingQueue, (0x8002_0800, 0x2000, true)); // covers only page 0x8002_1000 whole
        d.Notify(VirtioBalloon.ReportingQueue);
        Assert.Equal([(Page(0x8002_1000), 1)], m.Balloon.FreeRanges());
        Assert.False(m.Memory.IsZeroPage(Page(0x8002_0000)));
    }

    [Fact]
    public void InflateAndDeflateUseTheMachineBalloon()
    {
        using var m = NewMachine();
        var d = Driver(m);
        uint pfn = (uint)(0x8003_0000UL >> 12);
        m.Memory.Write(0x8007_0000, BitConverter.GetBytes(pfn).Concat(BitConverter.GetBytes(pfn + 1)).ToArray());
        d.Offer(VirtioBalloon.InflateQueue, (0x8007_0000, 8, false));
        d.Notify(VirtioBalloon.InflateQueue);
        Assert.Equal([Page(0x8003_0000), Page(0x8003_1000)], m.Balloon.FreePages());
        d.Write(0x104, 2); // actual
        Assert.Equal(2u, m.Virtio!.Balloon!.ActualPages);

        d.Offer(VirtioBalloon.DeflateQueue, (0x8007_0000, 4, false));
        d.Notify(VirtioBalloon.DeflateQueue);
        Assert.Equal([Page(0x8003_1000)], m.Balloon.FreePages());
    }

    [Fact]
    public void TargetChangeRaisesAConfigInterrupt()
    {
        using var m = NewMachine();
        var d = Driver(m);
        uint gen = d.Read(0x0fc);
        m.Virtio!.Balloon!.SetTarget(64);
        Assert.Equal(64u, d.Read(0x100));
        Assert.Equal(VirtioMmio.InterruptConfigChange, d.Read(0x060));
        Assert.NotEqual(gen, d.Read(0x0fc));
    }

    [Fact]
    public void ReportedPagesSurviveSaveRestoreAndMatchTheDigest()
    {
        using var a = NewMachine();
        var d = Driver(a);
        a.Memory.Write(0x8002_0000, [9, 9, 9]);
        d.Offer(VirtioBalloon.ReportingQueue, (0x8002_0000, 2 * 4096, true));
        d.Notify(VirtioBalloon.ReportingQueue);
        var w = new StateWriter();
        a.SaveState(w);

        using var b = NewMachine();
        b.Memory.Write(0x8002_0000, [5]); // the destination had other contents there: restore zeroes them
        b.RestoreState(new StateReader(w.ToArray()));
        Assert.True(b.Balloon.IsFreePage(Page(0x8002_0000)));
        Assert.True(b.Balloon.IsFreePage(Page(0x8002_1000)));
        Assert.Equal(a.ComputeDigest(), b.ComputeDigest());

        // Writing the page on one side only makes the digests differ: the bit is part of the state.
        b.Memory.Write(0x8002_1000, [0]);
        Assert.False(b.Balloon.IsFreePage(Page(0x8002_1000)));
        Assert.NotEqual(a.ComputeDigest(), b.ComputeDigest());
    }

    /// <summary>Runs one guest store instruction (code in the first page, outside what the tests report).</summary>
    private static void GuestStore(Machine m, ulong address, byte value)
    {
        m.Memory.Write(Dram, BitConverter.GetBytes(Rv.Sb(6, 5, 0)));
        m.SetPc(Dram);
        m.SetRegister(5, address);
        m.SetRegister(6, value);
        m.Run(m.Icount + 1);
        var b = new byte[1];
        m.Memory.Read(address, b);
        Assert.Equal(value, b[0]);
    }
}
