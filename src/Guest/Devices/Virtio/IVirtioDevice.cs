using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Devices.Virtio;

/// <summary>
/// A virtio device behind a <see cref="VirtioMmio"/> transport. The transport owns the registers,
/// feature negotiation, the queues and the interrupt; a device only says what it offers and serves
/// its queues when the driver notifies them (on the guest thread, at the icount of the notifying
/// store, so device work is deterministic).
/// </summary>
public interface IVirtioDevice
{
    VirtioDeviceId DeviceId { get; }

    /// <summary>Device-specific feature bits; the transport adds <see cref="VirtioFeatures.Transport"/>.</summary>
    ulong Features { get; }

    /// <summary>Queues, and the largest size of each (a power of two).</summary>
    int QueueCount { get; }
    ushort QueueMaxSize { get; }

    /// <summary>Called once when the transport is built.</summary>
    void Attach(VirtioMmio transport);

    /// <summary>Device configuration space, little-endian; offset is from 0x100.</summary>
    uint ReadConfig(int offset, int size);
    void WriteConfig(int offset, int size, uint value);

    /// <summary>The driver made buffers available on queue <paramref name="queue"/>.</summary>
    void QueueNotify(int queue);

    /// <summary>The driver reset the device (status 0) or the machine reset.</summary>
    void Reset();

    /// <summary>Device state beyond the transport's: one versioned section.</summary>
    void Save(StateWriter w);

    /// <summary>The device's canonical state for the machine digest: no section, no version (FORMAT.md, "State digest").</summary>
    void WriteDigestState(StateWriter w);

    /// <summary>Reads and validates a section written by <see cref="Save"/>; changes nothing until the returned action runs.</summary>
    Action Restore(StateReader r);
}
