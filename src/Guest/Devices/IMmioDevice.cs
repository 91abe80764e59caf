using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Devices;

/// <summary>A device on the MMIO bus. Offsets are relative to the device's base; size is 1, 2, 4 or 8.</summary>
public interface IMmioDevice : IPersistent
{
    ulong Base { get; }
    ulong Length { get; }
    /// <summary>Returns false for an access the device rejects (the hart raises an access fault).</summary>
    bool Read(ulong offset, int size, out ulong value);
    bool Write(ulong offset, int size, ulong value);
    void Reset();

    /// <summary>
    /// The device's part of the state digest: its 4-byte tag, then its state as FORMAT.md's "State
    /// digest" encodes it, with no version. It changes only with <see cref="Machine.DigestVersion"/>,
    /// never with the device's save section.
    /// </summary>
    void WriteDigestState(StateWriter writer);
}
