using LiveMigration.Guest.Devices.Virtio.Balloon;
using LiveMigration.Guest.Devices.Virtio.Block;
using LiveMigration.Guest.Devices.Virtio.Rng;
using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Devices.Virtio;

/// <summary>
/// The eight virtio-mmio slots of the virt map as one bus device: it routes each access to its
/// slot and saves the populated slots in one section. Devices take slots from the top down in a
/// fixed order (rng, balloon, block), the slots QEMU gives the same devices on its command line in that
/// order (see <see cref="QemuDeviceArgs"/>).
/// </summary>
public sealed class VirtioBus : IMmioDevice
{
    // Bump when a saved field is added or its meaning changes; readers accept 1..current.
    private const ushort StateVersion = 1;

    /// <summary>What a kernel boot gets: entropy (virtio-rng) and free page reporting (virtio-balloon).</summary>
    public const VirtioDevices KernelBootDevices = VirtioDevices.Rng | VirtioDevices.Balloon;

    /// <summary>Every device this build has (a saved state naming others is refused).</summary>
    public const VirtioDevices KnownDevices = VirtioDevices.Rng | VirtioDevices.Balloon | VirtioDevices.Block;

    private readonly VirtioMmio[] _slots = new VirtioMmio[VirtioMmio.SlotCount];

    public VirtioBus(Machine machine, VirtioDevices devices)
    {
        Devices = devices;
        var queue = new Queue<IVirtioDevice>();
        if (devices.HasFlag(VirtioDevices.Rng)) queue.Enqueue(Rng = new VirtioRng(machine));
        if (devices.HasFlag(VirtioDevices.Balloon)) queue.Enqueue(Balloon = new VirtioBalloon(machine));
        if (devices.HasFlag(VirtioDevices.Block)) queue.Enqueue(Block = new VirtioBlk(machine));
        for (int slot = VirtioMmio.SlotCount - 1; slot >= 0; slot--)
            _slots[slot] = new VirtioMmio(machine, slot, queue.Count > 0 ? queue.Dequeue() : null);
    }

    public VirtioDevices Devices { get; }
    public VirtioRng? Rng { get; }
    public VirtioBalloon? Balloon { get; }
    public VirtioBlk? Block { get; }

    public VirtioMmio Slot(int slot) => _slots[slot];

    /// <summary>The transport a device sits on.</summary>
    public VirtioMmio SlotOf(IVirtioDevice device) => _slots.First(s => s.Device == device);

    /// <summary>QEMU options that put the same devices in the same slots (-device in our fill order).</summary>
    public static IEnumerable<string> QemuDeviceArgs(VirtioDevices devices)
    {
        if (devices.HasFlag(VirtioDevices.Rng)) { yield return "-device"; yield return "virtio-rng-device"; }
        if (devices.HasFlag(VirtioDevices.Balloon)) { yield return "-device"; yield return "virtio-balloon-device,free-page-reporting=on"; }
        if (devices.HasFlag(VirtioDevices.Block)) { yield return "-device"; yield return "virtio-blk-device,drive=d0"; } // with -drive ...,if=none,id=d0
    }

    public ulong Base => VirtioMmio.FirstSlotBase;
    public ulong Length => VirtioMmio.SlotCount * VirtioMmio.SlotSize;

    public bool Read(ulong offset, int size, out ulong value)
    {
        value = _slots[offset / VirtioMmio.SlotSize].Read(offset % VirtioMmio.SlotSize, size);
        return size is 1 or 2 or 4;
    }

    public bool Write(ulong offset, int size, ulong value)
    {
        if (size is not (1 or 2 or 4)) return false;
        _slots[offset / VirtioMmio.SlotSize].Write(offset % VirtioMmio.SlotSize, size, (uint)value);
        return true;
    }

    public void Reset()
    {
        foreach (var s in _slots) s.Reset();
    }

    public void Save(StateWriter w)
    {
        w.BeginSection("VIRT", StateVersion);
        w.U32((uint)Devices);
        foreach (var s in _slots)
            if (s.Device != null) s.Save(w);
        w.EndSection();
    }

    public void WriteDigestState(StateWriter w)
    {
        w.Bytes("VIRT"u8);
        w.U32((uint)Devices);
        foreach (var s in _slots)
            if (s.Device != null) s.WriteDigestState(w);
    }

    public void Restore(StateReader r) => PrepareRestore(r)();

    public Action PrepareRestore(StateReader r)
    {
        r.OpenSection("VIRT", 1, StateVersion);
        var devices = (VirtioDevices)r.U32();
        if (devices != Devices) throw new InvalidDataException($"saved machine has virtio devices '{devices}'; this machine has '{Devices}'");
        var apply = new List<Action>();
        foreach (var s in _slots)
            if (s.Device != null) apply.Add(s.Restore(r));
        r.CloseSection();
        return () =>
        {
            foreach (var a in apply) a(); // every slot validated: now nothing can fail
        };
    }
}
