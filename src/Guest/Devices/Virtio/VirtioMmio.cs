using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Devices.Virtio;

/// <summary>
/// A virtio-mmio transport, version 2 ("modern", virtio 1.1 §4.2.2), on one slot of QEMU virt's
/// map: slot i at 0x1000_1000 + 0x1000·i, PLIC source 1 + i. A slot without a device answers
/// with device ID 0, as QEMU's empty transports do, so a kernel probing all eight skips it.
/// Registers (32-bit):
/// <code>
/// 0x000 MagicValue "virt"   0x004 Version 2          0x008 DeviceID        0x00c VendorID
/// 0x010 DeviceFeatures      0x014 DeviceFeaturesSel  0x020 DriverFeatures  0x024 DriverFeaturesSel
/// 0x030 QueueSel            0x034 QueueNumMax        0x038 QueueNum        0x044 QueueReady
/// 0x050 QueueNotify (W)     0x060 InterruptStatus    0x064 InterruptACK (W) 0x070 Status
/// 0x080/84 QueueDesc lo/hi  0x090/94 QueueDriver     0x0a0/a4 QueueDevice  0x0fc ConfigGeneration
/// 0x100.. device configuration space
/// </code>
/// </summary>
public sealed class VirtioMmio
{
    public const int SlotCount = 8;
    public const ulong FirstSlotBase = 0x1000_1000;
    public const ulong SlotSize = 0x1000;
    public const int FirstIrq = 1;
    public const uint MagicValue = 0x7472_6976; // "virt"
    public const uint VendorId = 0x4D4C_564C; // "LVLM": ours, not QEMU's
    public const uint InterruptUsedBuffer = 1, InterruptConfigChange = 2;

    public static ulong SlotBase(int slot) => FirstSlotBase + (ulong)slot * SlotSize;
    public static int SlotIrq(int slot) => FirstIrq + slot;

    private readonly Machine _machine;
    private readonly Virtqueue[] _queues;
    private uint _deviceFeaturesSel, _driverFeaturesSel, _queueSel;
    private ulong _driverFeatures;

    public VirtioMmio(Machine machine, int slot, IVirtioDevice? device)
    {
        _machine = machine;
        Slot = slot;
        Device = device;
        Dma = new GuestDma(machine.Memory);
        _queues = new Virtqueue[device?.QueueCount ?? 0];
        for (int i = 0; i < _queues.Length; i++) _queues[i] = new Virtqueue(Dma, device!.QueueMaxSize);
        device?.Attach(this);
    }

    public int Slot { get; }
    public IVirtioDevice? Device { get; }
    public GuestDma Dma { get; }
    public VirtioStatus Status { get; private set; }
    public uint InterruptStatus { get; private set; }
    public uint ConfigGeneration { get; private set; }

    /// <summary>Features the driver accepted (valid once FEATURES_OK is set).</summary>
    public ulong DriverFeatures => _driverFeatures;

    public ulong OfferedFeatures => Device == null ? 0 : Device.Features | VirtioFeatures.Transport;

    public Virtqueue Queue(int index) => _queues[index];

    public void Reset()
    {
        Status = 0;
        InterruptStatus = 0;
        _deviceFeaturesSel = _driverFeaturesSel = _queueSel = 0;
        _driverFeatures = 0;
        foreach (var q in _queues) q.Reset();
        Device?.Reset();
        UpdateIrq();
    }

    public uint Read(ulong offset, int size)
    {
        if (offset >= 0x100) return Device == null ? 0 : Device.ReadConfig((int)(offset - 0x100), size);
        if (size != 4) return 0;
        var q = _queueSel < _queues.Length ? _queues[_queueSel] : null;
        return offset switch
        {
            0x000 => MagicValue,
            0x004 => 2,
            0x008 => (uint)(Device?.DeviceId ?? VirtioDeviceId.None),
            0x00c => VendorId,
            0x010 => _deviceFeaturesSel switch { 0 => (uint)OfferedFeatures, 1 => (uint)(OfferedFeatures >> 32), _ => 0 },
            0x034 => q == null ? 0u : q.MaxSize,
            0x038 => q?.Size ?? 0,
            0x044 => q is { Ready: true } ? 1u : 0u,
            0x060 => InterruptStatus,
            0x070 => (uint)Status,
            0x080 => (uint)(q?.DescTable ?? 0),
            0x084 => (uint)((q?.DescTable ?? 0) >> 32),
            0x090 => (uint)(q?.AvailRing ?? 0),
            0x094 => (uint)((q?.AvailRing ?? 0) >> 32),
            0x0a0 => (uint)(q?.UsedRing ?? 0),
            0x0a4 => (uint)((q?.UsedRing ?? 0) >> 32),
            0x0fc => ConfigGeneration,
            _ => 0,
        };
    }

    public void Write(ulong offset, int size, uint value)
    {
        if (Device == null) return;
        if (offset >= 0x100) { Device.WriteConfig((int)(offset - 0x100), size, value); return; }
        if (size != 4) return;
        var q = _queueSel < _queues.Length ? _queues[_queueSel] : null;
        switch (offset)
        {
            case 0x014: _deviceFeaturesSel = value; break;
            case 0x020:
                if (_driverFeaturesSel == 0) _driverFeatures = (_driverFeatures & 0xFFFF_FFFF_0000_0000) | value;
                else if (_driverFeaturesSel == 1) _driverFeatures = (_driverFeatures & 0xFFFF_FFFF) | ((ulong)value << 32);
                break;
            case 0x024: _driverFeaturesSel = value; break;
            case 0x030: _queueSel = value; break;
            case 0x038: if (q != null && !q.Ready) q.Size = (ushort)Math.Min(value, q.MaxSize); break;
            case 0x044:
                // A queue becomes ready only with a power-of-two size (§2.6); otherwise it stays off.
                if (q != null) q.Ready = value == 1 && q.Size != 0 && (q.Size & (q.Size - 1)) == 0;
                break;
            case 0x050: Notify(value); break;
            case 0x064:
                InterruptStatus &= ~value;
                UpdateIrq();
                break;
            case 0x070: WriteStatus(value); break;
            case 0x080: if (q is { Ready: false }) q.DescTable = Low(q.DescTable, value); break;
            case 0x084: if (q is { Ready: false }) q.DescTable = High(q.DescTable, value); break;
            case 0x090: if (q is { Ready: false }) q.AvailRing = Low(q.AvailRing, value); break;
            case 0x094: if (q is { Ready: false }) q.AvailRing = High(q.AvailRing, value); break;
            case 0x0a0: if (q is { Ready: false }) q.UsedRing = Low(q.UsedRing, value); break;
            case 0x0a4: if (q is { Ready: false }) q.UsedRing = High(q.UsedRing, value); break;
        }
    }

    private void WriteStatus(uint value)
    {
        if (value == 0) { Reset(); return; }
        var s = (VirtioStatus)value;
        // FEATURES_OK sticks only for a subset of what we offer that includes VERSION_1 (§3.1.1).
        if ((s & VirtioStatus.FeaturesOk) != 0 && (Status & VirtioStatus.FeaturesOk) == 0 &&
            ((_driverFeatures & ~OfferedFeatures) != 0 || (_driverFeatures & VirtioFeatures.Version1) == 0))
            s &= ~VirtioStatus.FeaturesOk;
        Status = s | (Status & VirtioStatus.DeviceNeedsReset);
    }

    private void Notify(uint queue)
    {
        if (queue >= _queues.Length || (Status & VirtioStatus.DriverOk) == 0 || (Status & VirtioStatus.DeviceNeedsReset) != 0) return;
        Device!.QueueNotify((int)queue);
        if (_queues[queue].Error != VirtqError.None) NeedsReset();
    }

    /// <summary>The device put buffers in the used ring of <paramref name="queue"/>: interrupt unless the driver opted out.</summary>
    public void UsedBuffersAdded(int queue)
    {
        if (!_queues[queue].DriverWantsInterrupt()) return;
        InterruptStatus |= InterruptUsedBuffer;
        UpdateIrq();
    }

    /// <summary>The device changed its configuration space (e.g. a balloon target).</summary>
    public void ConfigChanged()
    {
        ConfigGeneration++;
        if ((Status & VirtioStatus.DriverOk) == 0) return;
        InterruptStatus |= InterruptConfigChange;
        UpdateIrq();
    }

    /// <summary>The guest broke the protocol (e.g. a descriptor outside RAM): tell it, and stop serving queues until it resets.</summary>
    public void NeedsReset()
    {
        Status |= VirtioStatus.DeviceNeedsReset;
        if ((Status & VirtioStatus.DriverOk) != 0) ConfigChanged();
    }

    private void UpdateIrq() => _machine.Plic.SetLevel(SlotIrq(Slot), InterruptStatus != 0);

    private static ulong Low(ulong v, uint lo) => (v & 0xFFFF_FFFF_0000_0000) | lo;
    private static ulong High(ulong v, uint hi) => (v & 0xFFFF_FFFF) | ((ulong)hi << 32);

    // ---- State (inside the bus's section; the device's own section follows) ----

    internal void Save(StateWriter w)
    {
        WriteTransportFields(w);
        Device!.Save(w);
    }

    internal void WriteDigestState(StateWriter w)
    {
        WriteTransportFields(w);
        Device!.WriteDigestState(w);
    }

    private void WriteTransportFields(StateWriter w)
    {
        w.U32((uint)Device!.DeviceId);
        w.U32((uint)Status);
        w.U32(InterruptStatus);
        w.U32(ConfigGeneration);
        w.U32(_deviceFeaturesSel);
        w.U32(_driverFeaturesSel);
        w.U32(_queueSel);
        w.U64(_driverFeatures);
        w.U32((uint)_queues.Length);
        foreach (var q in _queues) q.Save(w);
    }

    /// <summary>Reads and validates this slot's state; the returned action applies it.</summary>
    internal Action Restore(StateReader r)
    {
        var id = (VirtioDeviceId)r.U32();
        if (id != Device!.DeviceId) throw new InvalidDataException($"virtio slot {Slot} holds device {id} in the saved state; this machine has {Device.DeviceId} there");
        uint status = r.U32(), interrupt = r.U32(), generation = r.U32();
        uint featSel = r.U32(), drvFeatSel = r.U32(), queueSel = r.U32();
        ulong driverFeatures = r.U64();
        if (r.U32() != _queues.Length) throw new InvalidDataException($"virtio slot {Slot} has a different queue count in the saved state");
        if ((interrupt & ~(InterruptUsedBuffer | InterruptConfigChange)) != 0) throw new InvalidDataException($"virtio slot {Slot} has a bad interrupt status 0x{interrupt:x}");
        var saved = new Virtqueue.Saved[_queues.Length];
        for (int i = 0; i < saved.Length; i++) saved[i] = _queues[i].Read(r);
        var applyDevice = Device.Restore(r);
        return () =>
        {
            applyDevice();
            Status = (VirtioStatus)status;
            InterruptStatus = interrupt;
            ConfigGeneration = generation;
            _deviceFeaturesSel = featSel;
            _driverFeaturesSel = drvFeatSel;
            _queueSel = queueSel;
            _driverFeatures = driverFeatures;
            for (int i = 0; i < saved.Length; i++) _queues[i].Apply(saved[i]);
            // The interrupt line's level is the PLIC's saved state; nothing to drive here.
        };
    }
}
