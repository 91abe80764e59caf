namespace LiveMigration.Guest.Devices.Virtio;

/// <summary>Virtio device types (virtio 1.1 §5); the numbers are the spec's and go on the wire and in saved state.</summary>
public enum VirtioDeviceId : uint
{
    None = 0,
    Block = 2,
    Rng = 4,
    Balloon = 5,
}

/// <summary>Which virtio devices a machine has. Each takes the next free slot from the top (slot 7 first), as QEMU fills them in -device order.</summary>
[Flags]
public enum VirtioDevices
{
    None = 0,
    Rng = 1,
    Balloon = 2,
    /// <summary>virtio-blk: the machine has a disk (<see cref="Block.Disk"/>), inserted by the host.</summary>
    Block = 4,
}

/// <summary>Device status bits (virtio 1.1 §2.1).</summary>
[Flags]
public enum VirtioStatus : uint
{
    Acknowledge = 1,
    Driver = 2,
    DriverOk = 4,
    FeaturesOk = 8,
    DeviceNeedsReset = 0x40,
    Failed = 0x80,
}

/// <summary>Feature bits every device offers through the transport (virtio 1.1 §6).</summary>
public static class VirtioFeatures
{
    public const ulong IndirectDesc = 1UL << 28;
    public const ulong Version1 = 1UL << 32;
    public const ulong Transport = IndirectDesc | Version1;
}
