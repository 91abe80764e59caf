namespace LiveMigration.Guest.Platform;

/// <summary>What the generated device tree says beyond the fixed virt map: RAM, the hart, the command line, the initrd.</summary>
public sealed record DeviceTreeOptions
{
    /// <summary>The hart's extensions once S/U, Sv39 and F/D are in (the same string QEMU gives with -cpu rv64 minus the extensions we lack).</summary>
    public const string DefaultIsa = "rv64imafdc_zicsr_zifencei";

    public ulong MemoryBase { get; init; } = Memory.GuestMemory.DefaultBase;
    public required ulong MemorySize { get; init; }
    public string Isa { get; init; } = DefaultIsa;
    public string MmuType { get; init; } = "riscv,sv39";
    /// <summary>The kernel command line (<c>/chosen/bootargs</c>); null leaves the property out, as QEMU does without -append.</summary>
    public string? Bootargs { get; init; }
    /// <summary>Physical range of the initrd, end exclusive; null when there is none.</summary>
    public (ulong Start, ulong End)? Initrd { get; init; }
    /// <summary>Number of virtio-mmio transports to describe (QEMU virt has 8); 0 for none.</summary>
    public int VirtioSlots { get; init; } = Devices.Virtio.VirtioMmio.SlotCount;
}
