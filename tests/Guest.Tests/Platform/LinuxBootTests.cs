using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Platform;
using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Tests.Platform;

/// <summary>QEMU virt's boot flow on our machine: where everything lands, what the firmware is handed, and the one-line errors.</summary>
public class LinuxBootTests
{
    private static readonly byte[] Firmware = new byte[115_328]; // the size of Debian's fw_dynamic.bin

    private static Machine NewMachine(ulong mem = 256UL << 20) =>
        new(new MachineConfig { MemorySize = mem, Virtio = VirtioDevices.Rng | VirtioDevices.Balloon }, NullHostPort.Instance, compileBlocks: false);

    private static BootImages Images(byte[]? kernel = null, byte[]? initrd = null) => new()
    {
        Firmware = Firmware, Kernel = kernel ?? DeviceTreeTests.FakeImage(8 << 20), Initrd = initrd, CommandLine = "console=ttyS0",
    };

    [Fact]
    public void LaysOutAsQemuVirt()
    {
        using var m = NewMachine();
        var l = LinuxBoot.Load(m, Images(initrd: DeviceTreeTests.FakeInitrd(1 << 20)));
        Assert.Equal(0x8020_0000UL, l.KernelBase);
        Assert.Equal((0x8820_0000UL, 0x8830_0000UL), l.Initrd); // kernel + min(RAM/2, 128 MiB)
        Assert.Equal(0x8FE0_0000UL, l.DeviceTreeBase);             // 2 MiB-aligned below the end of RAM
        Assert.Equal(0x8000_0000UL, m.Pc);
        Assert.Equal(0UL, m.GetRegister(10));
        Assert.Equal(l.DeviceTreeBase, m.GetRegister(11));
        Assert.Equal(BootRom.DefaultBase, m.GetRegister(12));

        // fw_dynamic_info as OpenSBI reads it: magic, version 2, next address, next mode S.
        Assert.True(m.BootRom!.Read(0, 8, out ulong magic));
        Assert.Equal(BootRom.DynamicInfoMagic, magic);
        Assert.True(m.BootRom.Read(8, 8, out ulong version));
        Assert.Equal(2UL, version);
        Assert.True(m.BootRom.Read(16, 8, out ulong next));
        Assert.Equal(0x8020_0000UL, next);
        Assert.True(m.BootRom.Read(24, 8, out ulong mode));
        Assert.Equal(1UL, mode);
        Assert.False(m.BootRom.Write(0, 8, 0));
    }

    [Fact]
    public void SmallRamPutsTheInitrdHalfway()
    {
        using var m = NewMachine(64UL << 20);
        var l = LinuxBoot.Load(m, Images(kernel: DeviceTreeTests.FakeImage(4 << 20), initrd: DeviceTreeTests.FakeInitrd(4096)));
        Assert.Equal(0x8020_0000UL + (32UL << 20), l.Initrd!.Value.Start);
        Assert.Equal(0x83E0_0000UL, l.DeviceTreeBase);
    }

    [Fact]
    public void TheDeviceTreeIsStateAndInTheDigest()
    {
        using var a = NewMachine();
        LinuxBoot.Load(a, Images());
        var w = new StateWriter();
        a.SaveState(w);
        using var b = NewMachine();
        b.RestoreState(new StateReader(w.ToArray()));
        Assert.Equal(a.BootRom!.DeviceTree.ToArray(), b.BootRom!.DeviceTree.ToArray());
        Assert.Equal(a.ComputeDigest(), b.ComputeDigest());

        using var c = NewMachine();
        LinuxBoot.Load(c, Images() with { CommandLine = "console=ttyS0 quiet" });
        Assert.NotEqual(a.ComputeDigest(), c.ComputeDigest());
    }

    [Theory]
    [InlineData("elf", "kernel is an ELF file (vmlinux); give the Image (arch/riscv/boot/Image)")]
    [InlineData("garbage", "kernel is not a RISC-V Linux Image (no \"RSC\\x05\" magic in its header)")]
    [InlineData("initrd", "initrd is not a cpio archive (newc) nor a compressed one")]
    [InlineData("big", "kernel Image needs 300 MiB at 0x80200000; 256 MiB of RAM is too small (try --mem 256M)")]
    [InlineData("empty-fw", "firmware file is empty")]
    public void BadImagesGiveOneLineErrorsAndChangeNothing(string what, string message)
    {
        using var m = NewMachine();
        ulong digest = m.ComputeDigest();
        var images = what switch
        {
            "elf" => Images(kernel: [0x7F, (byte)'E', (byte)'L', (byte)'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            "garbage" => Images(kernel: new byte[100]),
            "initrd" => Images(initrd: "not a cpio"u8.ToArray()),
            "big" => Images(kernel: DeviceTreeTests.FakeImage(300UL << 20)),
            _ => Images() with { Firmware = [] },
        };
        var e = Assert.Throws<BootImageException>(() => LinuxBoot.Load(m, images));
        Assert.Equal(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Null(m.BootRom);
        Assert.Equal(digest, m.ComputeDigest());
    }
}
