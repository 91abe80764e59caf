using System.Buffers.Binary;
using LiveMigration.Guest.Devices;
using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Platform;

/// <summary>
/// The read-only boot ROM at QEMU virt's MROM address (0x1000). It holds what the boot flow hands
/// the firmware beyond registers: OpenSBI's <c>fw_dynamic_info</c> (where a2 points), and the device
/// tree the machine was booted with, so the tree is part of the machine's saved state and digest
/// even after the kernel has reused the RAM copy. Layout:
/// <code>
/// 0x00 fw_dynamic_info  magic u64 "OSBI", version u64 2, next_addr u64, next_mode u64 (1 = S), options u64, boot_hart u64
/// 0x40 the device tree blob (the same bytes as the copy in RAM)
/// </code>
/// QEMU puts its reset vector before the info; our hart starts in the firmware with the registers
/// that vector would have set (<see cref="LinuxBoot"/>), so the ROM holds data only.
/// </summary>
public sealed class BootRom : IMmioDevice
{
    public const ulong DefaultBase = 0x1000;
    public const ulong Size = 0xF000; // QEMU's VIRT_MROM size
    public const int DynamicInfoOffset = 0x00, DeviceTreeOffset = 0x40;
    public const ulong DynamicInfoMagic = 0x4942_534F; // "OSBI"
    public const ulong DynamicInfoVersion = 2;
    public const ulong NextModeSupervisor = 1;
    // Bump when the layout or a saved field changes; readers accept 1..current.
    private const ushort StateVersion = 1;

    private byte[] _contents;

    private BootRom(byte[] contents) => _contents = contents;

    /// <summary>A ROM telling the firmware to enter <paramref name="nextAddress"/> in S-mode, holding <paramref name="deviceTree"/>.</summary>
    public static BootRom Create(ulong nextAddress, ReadOnlySpan<byte> deviceTree)
    {
        if (DeviceTreeOffset + deviceTree.Length > (int)Size) throw new ArgumentException($"a {deviceTree.Length}-byte device tree does not fit the boot ROM");
        var c = new byte[DeviceTreeOffset + deviceTree.Length];
        ulong[] info = [DynamicInfoMagic, DynamicInfoVersion, nextAddress, NextModeSupervisor, 0, 0];
        for (int i = 0; i < info.Length; i++) BinaryPrimitives.WriteUInt64LittleEndian(c.AsSpan(DynamicInfoOffset + 8 * i), info[i]);
        deviceTree.CopyTo(c.AsSpan(DeviceTreeOffset));
        return new BootRom(c);
    }

    /// <summary>An empty ROM to restore a saved one into.</summary>
    internal static BootRom Empty() => new([]);

    public ulong Base => DefaultBase;
    public ulong Length => Size;
    public ulong DynamicInfoAddress => DefaultBase + DynamicInfoOffset;
    public ReadOnlySpan<byte> DeviceTree => _contents.Length > DeviceTreeOffset ? _contents.AsSpan(DeviceTreeOffset) : [];

    public bool Read(ulong offset, int size, out ulong value)
    {
        value = 0;
        for (int i = size - 1; i >= 0; i--)
        {
            ulong at = offset + (ulong)i;
            value = (value << 8) | (at < (ulong)_contents.Length ? _contents[at] : 0u);
        }
        return true;
    }

    public bool Write(ulong offset, int size, ulong value) => false; // ROM: a store is an access fault

    public void Reset() { }

    public void Save(StateWriter w)
    {
        w.BeginSection("BROM", StateVersion);
        w.Blob(_contents);
        w.EndSection();
    }

    /// <summary>The ROM's contents include the device tree, which is a digest input.</summary>
    public void WriteDigestState(StateWriter w)
    {
        w.Bytes("BROM"u8);
        w.Blob(_contents);
    }

    public void Restore(StateReader r) => PrepareRestore(r)();

    public Action PrepareRestore(StateReader r)
    {
        r.OpenSection("BROM", 1, StateVersion);
        var contents = r.Blob();
        r.CloseSection();
        if ((ulong)contents.Length > Size) throw new InvalidDataException($"boot ROM state has {contents.Length} bytes; the ROM holds {Size}");
        if (contents.Length != 0 && contents.Length < DeviceTreeOffset) throw new InvalidDataException("boot ROM state is cut short");
        var parsed = contents.ToArray();
        return () => _contents = parsed;
    }
}
