using System.Buffers.Binary;
using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Platform;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Platform;

/// <summary>The generated device tree: a valid DTB (dtc decodes it) that says what QEMU 7.2's virt says for the devices we model.</summary>
public class DeviceTreeTests
{
    public const string Firmware = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin";
    /// <summary>QEMU's hart with the extensions ours lacks turned off, so both trees name the same ISA.</summary>
    public const string QemuCpu = "rv64,h=false,sstc=false,zba=false,zbb=false,zbc=false,zbs=false,Zihintpause=false,svinval=false,svnapot=false,svpbmt=false,pmu-num=0";
    private const string Append = "console=ttyS0 earlycon quiet";
    private const ulong Mem = 256UL << 20;

    [Fact]
    public void WriterProducesTheHeaderAndDeduplicatesNames()
    {
        var w = new FdtWriter();
        w.BeginNode("");
        w.Cells("a", 1);
        w.BeginNode("n@1");
        w.Cells("a", 2, 3);
        w.Strings("s", "x", "yz");
        w.Property("flag");
        w.EndNode();
        w.EndNode();
        byte[] b = w.Finish();
        Assert.Equal(FdtWriter.Magic, BinaryPrimitives.ReadUInt32BigEndian(b));
        Assert.Equal((uint)b.Length, BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(4)));
        Assert.Equal(17u, BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(20)));
        uint stringsSize = BinaryPrimitives.ReadUInt32BigEndian(b.AsSpan(32));
        Assert.Equal((uint)"a\0s\0flag\0".Length, stringsSize); // "a" stored once
        Assert.Throws<InvalidOperationException>(() => w.Finish());
        var open = new FdtWriter();
        open.BeginNode("");
        Assert.Throws<InvalidOperationException>(() => open.Finish());
    }

    [RequiresToolFact("dtc")]
    public void DtcDecodesTheTreeWithoutComplaint()
    {
        byte[] dtb = VirtDeviceTree.Build(new DeviceTreeOptions { MemorySize = Mem, Bootargs = Append, Initrd = (0x8820_0000, 0x8821_0000) });
        var (t, warnings) = Dts.DecodeWithWarnings(dtb);
        // The one warning QEMU's own tree draws too: the hart's interrupt controller has no #address-cells (Linux wants it so).
        Assert.Equal(["Warning (interrupt_provider): /cpus/cpu@0/interrupt-controller: Missing #address-cells in interrupt provider"], warnings);
        Assert.Equal("\"console=ttyS0 earlycon quiet\"", t.Properties["/chosen:bootargs"]);
        Assert.Equal("<0x00 0x80000000 0x00 0x10000000>", t.Properties["/memory@80000000:reg"]);
        Assert.Equal("<0x989680>", t.Properties["/cpus:timebase-frequency"]);
    }

    /// <summary>Nodes QEMU has that we do not model (and so must not describe).</summary>
    private static readonly string[] QemuOnlyNodes =
        ["/pmu", "/fw-cfg@10100000", "/flash@20000000", "/platform-bus@4000000", "/soc/rtc@101000", "/soc/pci@30000000"];

    /// <summary>Properties that differ on purpose: QEMU's random seed (entropy is an input here), Sv48 (ours is Sv39), its source count (96 vs our 95).</summary>
    private static readonly string[] KnownDifferences =
        ["/chosen:rng-seed", "/cpus/cpu@0:mmu-type", "/soc/plic@c000000:riscv,ndev"];

    [RequiresToolFact("qemu-system-riscv64")]
    public void BootedTreeMatchesQemuVirtForWhatWeModel()
    {
        Assert.True(Tool.OnPath("dtc"), "dtc is not installed (Debian: device-tree-compiler)");
        Assert.True(File.Exists(Firmware), $"{Firmware} is missing (Debian: opensbi)");
        string dir = Directory.CreateTempSubdirectory("lm-fdt-").FullName;
        try
        {
            byte[] kernel = FakeImage(3 << 20);
            byte[] initrd = FakeInitrd(100_000);
            File.WriteAllBytes(Path.Combine(dir, "Image"), kernel);
            File.WriteAllBytes(Path.Combine(dir, "initrd"), initrd);
            string dump = Path.Combine(dir, "qemu.dtb");
            var q = Tool.Run("qemu-system-riscv64",
                ["-M", $"virt,dumpdtb={dump}", "-cpu", QemuCpu, "-m", "256M", "-display", "none", "-bios", Firmware,
                 "-kernel", Path.Combine(dir, "Image"), "-initrd", Path.Combine(dir, "initrd"), "-append", Append]);
            Assert.True(q.ExitCode == 0, q.Stderr);
            var qemu = Dts.Decode(File.ReadAllBytes(dump));

            using var m = new Machine(new MachineConfig { MemorySize = Mem, Virtio = VirtioDevices.Rng | VirtioDevices.Balloon }, NullHostPort.Instance);
            var layout = LinuxBoot.Load(m, new BootImages { Firmware = File.ReadAllBytes(Firmware), Kernel = kernel, Initrd = initrd, CommandLine = Append });
            var dtb = new byte[layout.DeviceTreeSize];
            m.Memory.Read(m.GetRegister(11), dtb);
            Assert.Equal(dtb, m.BootRom!.DeviceTree.ToArray());
            var ours = Dts.Decode(dtb);

            Assert.Equal(qemu.Nodes.Except(QemuOnlyNodes), ours.Nodes);
            foreach (var (key, value) in ours.Properties)
            {
                if (KnownDifferences.Contains(key)) continue;
                Assert.True(qemu.Properties.TryGetValue(key, out string? theirs), $"QEMU has no {key}");
                Assert.True(value == theirs, $"{key}: ours {value}, QEMU {theirs}");
            }
            var missing = qemu.Properties.Keys.Where(k => !ours.Properties.ContainsKey(k) && !KnownDifferences.Contains(k)
                && !QemuOnlyNodes.Any(n => k.StartsWith(n + ":", StringComparison.Ordinal) || k.StartsWith(n + "/", StringComparison.Ordinal)));
            Assert.Empty(missing);
            Assert.Equal("\"riscv,sv39\"", ours.Properties["/cpus/cpu@0:mmu-type"]);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    /// <summary>An Image header (Documentation/riscv/boot-image-header.rst) claiming <paramref name="imageSize"/> bytes, and nothing else.</summary>
    public static byte[] FakeImage(ulong imageSize)
    {
        var b = new byte[4096];
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(16), imageSize);
        "RISCV\0\0\0"u8.CopyTo(b.AsSpan(0x30));
        "RSC\x05"u8.CopyTo(b.AsSpan(0x38));
        return b;
    }

    public static byte[] FakeInitrd(int size)
    {
        var b = new byte[size];
        "070701"u8.CopyTo(b);
        return b;
    }
}
