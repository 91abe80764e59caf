using System.Buffers.Binary;
using LiveMigration.Guest.Loader;
using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Memory;

namespace LiveMigration.Guest.Platform;

/// <summary>What a kernel boot is made of: the firmware (OpenSBI's generic fw_dynamic), the kernel Image, an optional initrd and command line.</summary>
public sealed record BootImages
{
    public required byte[] Firmware { get; init; }
    public required byte[] Kernel { get; init; }
    public byte[]? Initrd { get; init; }
    public string? CommandLine { get; init; }
    /// <summary>
    /// Whether the machine gets virtio-balloon with free page reporting (true, the default; QEMU needs
    /// -device virtio-balloon-device,free-page-reporting=on): pages the kernel reports free are never sent.
    /// </summary>
    public bool Balloon { get; init; } = true;

    /// <summary>The virtio devices a machine booting these images has (before a disk).</summary>
    public VirtioDevices Devices => Balloon ? VirtioBus.KernelBootDevices : VirtioBus.KernelBootDevices & ~VirtioDevices.Balloon;
}

/// <summary>Where <see cref="LinuxBoot.Load"/> put everything.</summary>
public sealed record BootLayout(ulong FirmwareBase, ulong FirmwareEnd, ulong KernelBase, ulong KernelEnd, ulong DeviceTreeBase, int DeviceTreeSize, (ulong Start, ulong End)? Initrd);

/// <summary>A boot image the machine cannot use; the message is one line for the user.</summary>
public sealed class BootImageException(string message) : Exception(message);

/// <summary>
/// QEMU virt's boot flow (hw/riscv/boot.c in 7.2, followed here from its documented behaviour):
/// the firmware at the start of DRAM, run in M-mode with a0 = hart id, a1 = device tree, a2 = the
/// fw_dynamic_info that sends it on to the kernel in S-mode; the kernel at the first 2 MiB boundary
/// after the firmware (0x8020_0000 for OpenSBI); the initrd at kernel + min(RAM/2, 128 MiB); the
/// device tree at the highest 2 MiB boundary that leaves room for it below the end of RAM (or 3 GiB).
/// </summary>
public static class LinuxBoot
{
    private const ulong Align2M = 2UL << 20;
    private const ulong InitrdOffsetCap = 128UL << 20;
    private const ulong Below = 3UL << 30;
    // The RISC-V Image header (Documentation/riscv/boot-image-header.rst): magic2 "RSC\x05" at 0x38.
    private const int ImageHeaderSize = 64, ImageSizeOffset = 16, ImageMagic2Offset = 0x38;
    private const uint ImageMagic2 = 0x0543_5352;

    /// <summary>
    /// Loads the images, the device tree and the boot ROM into a fresh machine and points the hart at
    /// the firmware. Checks everything first: a bad image changes nothing.
    /// </summary>
    public static BootLayout Load(Machine machine, BootImages images)
    {
        var mem = machine.Memory;
        ulong ramEnd = mem.Base + mem.Size;
        var firmware = FirmwareSegments(images.Firmware, mem.Base);
        ulong fwEnd = firmware.Max(s => s.Address + (ulong)s.Data.Length);
        if (fwEnd > ramEnd) throw new BootImageException($"firmware ({fwEnd - mem.Base} bytes from 0x{mem.Base:x}) does not fit in {mem.Size >> 20} MiB of RAM");

        ulong kernelSize = KernelMemorySize(images.Kernel);
        ulong kernelBase = AlignUp(fwEnd, Align2M);
        ulong kernelEnd = kernelBase + kernelSize;

        (ulong Start, ulong End)? initrd = null;
        if (images.Initrd is { } rd)
        {
            CheckInitrd(rd);
            ulong start = kernelBase + Math.Min(mem.Size / 2, InitrdOffsetCap);
            initrd = (start, start + (ulong)rd.Length);
        }

        var options = new DeviceTreeOptions
        {
            MemoryBase = mem.Base, MemorySize = mem.Size, Bootargs = images.CommandLine, Initrd = initrd,
            VirtioSlots = machine.Virtio == null ? 0 : Devices.Virtio.VirtioMmio.SlotCount,
        };
        byte[] fdt = VirtDeviceTree.Build(options);
        ulong top = mem.Base < Below ? Math.Min(ramEnd, Below) : ramEnd;
        ulong fdtBase = AlignDown(top - (ulong)fdt.Length, Align2M);

        if (fdtBase < kernelBase || kernelEnd > (initrd?.Start ?? fdtBase) || kernelEnd > fdtBase)
            throw new BootImageException($"kernel Image needs {kernelSize >> 20} MiB at 0x{kernelBase:x}; {mem.Size >> 20} MiB of RAM is too small (try --mem 256M)");
        if (initrd is { } r && (r.End > fdtBase || r.Start < kernelEnd))
            throw new BootImageException($"initrd of {(r.End - r.Start) >> 20} MiB does not fit between the kernel and the device tree at 0x{fdtBase:x} in {mem.Size >> 20} MiB of RAM (try a larger --mem)");

        foreach (var (address, data) in firmware) mem.Write(address, data);
        mem.Write(kernelBase, images.Kernel);
        if (initrd is { } ir) mem.Write(ir.Start, images.Initrd);
        mem.Write(fdtBase, fdt);
        var rom = BootRom.Create(kernelBase, fdt);
        machine.InstallBootRom(rom);

        machine.Reset(mem.Base);
        machine.SetRegister(10, 0);          // a0: hart id
        machine.SetRegister(11, fdtBase);    // a1: device tree
        machine.SetRegister(12, rom.DynamicInfoAddress); // a2: fw_dynamic_info
        return new BootLayout(mem.Base, fwEnd, kernelBase, kernelEnd, fdtBase, fdt.Length, initrd);
    }

    /// <summary>Raw firmware loads at the start of DRAM; an ELF (fw_dynamic.elf) where its segments say.</summary>
    private static List<(ulong Address, byte[] Data)> FirmwareSegments(byte[] firmware, ulong ramBase)
    {
        if (firmware.Length == 0) throw new BootImageException("firmware file is empty");
        if (firmware.Length < 4 || firmware[0] != 0x7F || firmware[1] != (byte)'E' || firmware[2] != (byte)'L' || firmware[3] != (byte)'F')
            return [(ramBase, firmware)];
        try
        {
            var (_, segments) = ElfLoader.Parse(firmware);
            return segments.Select(s =>
            {
                var data = new byte[s.MemorySize];
                firmware.AsSpan((int)s.FileOffset, (int)s.FileSize).CopyTo(data);
                return (s.Address, data);
            }).ToList();
        }
        catch (ElfLoadException e) { throw new BootImageException($"firmware: {e.Message}"); }
    }

    /// <summary>The memory the Image occupies once running (its header's image_size, which covers bss).</summary>
    private static ulong KernelMemorySize(byte[] kernel)
    {
        if (kernel.Length >= 4 && kernel[0] == 0x7F && kernel[1] == (byte)'E' && kernel[2] == (byte)'L' && kernel[3] == (byte)'F')
            throw new BootImageException("kernel is an ELF file (vmlinux); give the Image (arch/riscv/boot/Image)");
        if (kernel.Length < ImageHeaderSize || BinaryPrimitives.ReadUInt32LittleEndian(kernel.AsSpan(ImageMagic2Offset)) != ImageMagic2)
            throw new BootImageException("kernel is not a RISC-V Linux Image (no \"RSC\\x05\" magic in its header)");
        ulong size = BinaryPrimitives.ReadUInt64LittleEndian(kernel.AsSpan(ImageSizeOffset));
        if (size < (ulong)kernel.Length) size = (ulong)kernel.Length; // old headers leave it 0
        return size;
    }

    /// <summary>An initrd must be a cpio archive (newc), possibly compressed; anything else the kernel would only complain about later.</summary>
    private static void CheckInitrd(byte[] initrd)
    {
        ReadOnlySpan<byte> d = initrd;
        if (d.Length == 0) throw new BootImageException("initrd file is empty");
        bool ok = d.StartsWith("070701"u8) || d.StartsWith("070702"u8)
            || d.StartsWith((ReadOnlySpan<byte>)[0x1F, 0x8B]) // gzip
            || d.StartsWith((ReadOnlySpan<byte>)[0xFD, (byte)'7', (byte)'z', (byte)'X', (byte)'Z']) // xz
            || d.StartsWith((ReadOnlySpan<byte>)[0x28, 0xB5, 0x2F, 0xFD]) // zstd
            || d.StartsWith((ReadOnlySpan<byte>)[0x02, 0x21, 0x4C, 0x18]) // lz4 legacy
            || d.StartsWith("BZh"u8);
        if (!ok) throw new BootImageException("initrd is not a cpio archive (newc) nor a compressed one");
    }

    private static ulong AlignUp(ulong v, ulong a) => (v + a - 1) & ~(a - 1);
    private static ulong AlignDown(ulong v, ulong a) => v & ~(a - 1);
}
