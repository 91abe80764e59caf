using System.Buffers.Binary;
using LiveMigration.Guest.Devices.Virtio;

namespace LiveMigration.Guest.Tests.Devices.Virtio;

/// <summary>
/// The driver side of virtio-mmio for tests: register accesses through the bus, as a guest would
/// make them, and split virtqueues built by hand in guest memory.
/// </summary>
public sealed class VirtioDriver(Machine machine, int slot)
{
    private Machine machine = machine;

    public const ulong QueueArea = 0x8008_0000; // descriptor table, then avail, then used, per queue 16 KiB apart
    public const ushort QueueSize = 16;

    private readonly Dictionary<int, ushort> _availIdx = [];
    private readonly Dictionary<int, ushort> _nextDesc = [];

    /// <summary>The machine the driver talks to; switch it to go on with a restored copy.</summary>
    public Machine Machine { get => machine; set => machine = value; }
    public ulong SlotOffset => (ulong)slot * VirtioMmio.SlotSize;

    public uint Read(ulong reg)
    {
        Assert.True(machine.Virtio!.Read(SlotOffset + reg, 4, out ulong v));
        return (uint)v;
    }

    public void Write(ulong reg, uint value) => Assert.True(machine.Virtio!.Write(SlotOffset + reg, 4, value));

    public static ulong Desc(int q) => QueueArea + (ulong)q * 0x4000;
    public static ulong Avail(int q) => Desc(q) + 16UL * QueueSize;
    public static ulong Used(int q) => Desc(q) + 0x1000;

    /// <summary>The driver's init sequence (§3.1.1) accepting <paramref name="features"/>, then queues 0..queues-1 set up and DRIVER_OK.</summary>
    public void Initialise(ulong features, int queues)
    {
        Write(0x070, 0);
        Write(0x070, (uint)(VirtioStatus.Acknowledge | VirtioStatus.Driver));
        Write(0x024, 0); Write(0x020, (uint)features);
        Write(0x024, 1); Write(0x020, (uint)(features >> 32));
        Write(0x070, (uint)(VirtioStatus.Acknowledge | VirtioStatus.Driver | VirtioStatus.FeaturesOk));
        Assert.True((Read(0x070) & (uint)VirtioStatus.FeaturesOk) != 0, "device refused the features");
        for (int q = 0; q < queues; q++)
        {
            Write(0x030, (uint)q);
            Assert.True(Read(0x034) >= QueueSize);
            Write(0x038, QueueSize);
            Write(0x080, (uint)Desc(q)); Write(0x084, (uint)(Desc(q) >> 32));
            Write(0x090, (uint)Avail(q)); Write(0x094, (uint)(Avail(q) >> 32));
            Write(0x0a0, (uint)Used(q)); Write(0x0a4, (uint)(Used(q) >> 32));
            Write(0x044, 1);
            _availIdx[q] = 0;
            _nextDesc[q] = 0;
        }
        Write(0x070, (uint)(VirtioStatus.Acknowledge | VirtioStatus.Driver | VirtioStatus.FeaturesOk | VirtioStatus.DriverOk));
    }

    /// <summary>Writes one descriptor into queue <paramref name="q"/>'s table (or any table at <paramref name="table"/>).</summary>
    public void WriteDescriptor(ulong table, int index, ulong address, uint length, ushort flags, ushort next)
    {
        var d = new byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(d, address);
        BinaryPrimitives.WriteUInt32LittleEndian(d.AsSpan(8), length);
        BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(12), flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d.AsSpan(14), next);
        machine.Memory.Write(table + 16UL * (ulong)index, d);
    }

    /// <summary>Puts a chain of (address, length, device-writable) segments on queue <paramref name="q"/>; returns its head.</summary>
    public ushort Offer(int q, params (ulong Address, uint Length, bool Writable)[] segments)
    {
        ushort head = _nextDesc[q];
        for (int i = 0; i < segments.Length; i++)
        {
            var (a, l, w) = segments[i];
            ushort flags = (ushort)((w ? 2 : 0) | (i + 1 < segments.Length ? 1 : 0));
            WriteDescriptor(Desc(q), head + i, a, l, flags, (ushort)(head + i + 1));
        }
        _nextDesc[q] = (ushort)(head + segments.Length);
        Publish(q, head);
        return head;
    }

    /// <summary>Makes descriptor <paramref name="head"/> available on queue <paramref name="q"/>.</summary>
    public void Publish(int q, ushort head)
    {
        ushort idx = _availIdx[q];
        var b = new byte[2];
        BinaryPrimitives.WriteUInt16LittleEndian(b, head);
        machine.Memory.Write(Avail(q) + 4 + 2UL * (ulong)(idx % QueueSize), b);
        _availIdx[q] = ++idx;
        BinaryPrimitives.WriteUInt16LittleEndian(b, idx);
        machine.Memory.Write(Avail(q) + 2, b);
    }

    public void Notify(int q) => Write(0x050, (uint)q);

    public ushort UsedIdx(int q) => ReadU16(Used(q) + 2);

    public (uint Id, uint Length) UsedElement(int q, int index)
    {
        var b = new byte[8];
        machine.Memory.Read(Used(q) + 4 + 8UL * (ulong)(index % QueueSize), b);
        return (BinaryPrimitives.ReadUInt32LittleEndian(b), BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(4)));
    }

    private ushort ReadU16(ulong address)
    {
        var b = new byte[2];
        machine.Memory.Read(address, b);
        return BinaryPrimitives.ReadUInt16LittleEndian(b);
    }
}
