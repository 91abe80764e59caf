using LiveMigration.Guest.Devices.Clint;
using LiveMigration.Guest.Devices.Finisher;
using LiveMigration.Guest.Devices.Plic;
using LiveMigration.Guest.Devices.Uart;
using LiveMigration.Guest.Devices.Virtio;

namespace LiveMigration.Guest.Platform;

/// <summary>
/// The device tree of our virt machine, node for node what QEMU 7.2's <c>-M virt</c> generates for
/// the devices we have (compare <c>qemu-system-riscv64 -M virt,dumpdtb=FILE</c>), so the same kernel
/// sees the same machine on both. Left out because we do not model them: the goldfish RTC, fw-cfg,
/// flash, PCI, the platform bus and the PMU node; and QEMU's random <c>/chosen/rng-seed</c>, which
/// would make boots differ (entropy comes through virtio-rng, an input).
/// </summary>
public static class VirtDeviceTree
{
    // Phandles as QEMU numbers them: cpu, its interrupt controller, the PLIC, the test device.
    private const uint CpuPhandle = 1, CpuIntcPhandle = 2, PlicPhandle = 3, TestPhandle = 4;
    private const uint IrqMSoft = 3, IrqMTimer = 7, IrqSExternal = 9, IrqMExternal = 11;
    private const uint UartClockHz = 3_686_400;
    private const ulong PlicSize = 0x60_0000, ClintSize = 0x1_0000, TestSize = 0x1000, UartSize = 0x100;

    public static byte[] Build(DeviceTreeOptions o)
    {
        if (o.Initrd is { } rd && (rd.End < rd.Start || rd.End > uint.MaxValue))
            throw new ArgumentException($"initrd range 0x{rd.Start:x}..0x{rd.End:x} does not fit the 32-bit cells of /chosen");
        var w = new FdtWriter();
        w.BeginNode("");
        w.Cells("#address-cells", 2);
        w.Cells("#size-cells", 2);
        w.Strings("compatible", "riscv-virtio");
        // QEMU's model string: the kernel prints it at boot, and the console must match QEMU's.
        w.Strings("model", "riscv-virtio,qemu");

        w.BeginNode("chosen");
        if (o.Initrd is { } initrd)
        {
            w.Cells("linux,initrd-end", (uint)initrd.End);
            w.Cells("linux,initrd-start", (uint)initrd.Start);
        }
        if (o.Bootargs != null) w.Strings("bootargs", o.Bootargs);
        w.Strings("stdout-path", $"/soc/serial@{Uart16550.DefaultBase:x}");
        w.EndNode();

        // OpenSBI reads these to drive the sifive_test device for SBI system reset.
        SysconAction(w, "poweroff", SifiveTest.Pass);
        SysconAction(w, "reboot", SifiveTest.ResetValue);

        w.BeginNode($"memory@{o.MemoryBase:x}");
        w.Strings("device_type", "memory");
        Reg(w, o.MemoryBase, o.MemorySize);
        w.EndNode();

        Cpus(w, o);

        w.BeginNode("soc");
        w.Cells("#address-cells", 2);
        w.Cells("#size-cells", 2);
        w.Strings("compatible", "simple-bus");
        w.Property("ranges");

        w.BeginNode($"serial@{Uart16550.DefaultBase:x}");
        w.Cells("interrupts", Uart16550.Irq);
        w.Cells("interrupt-parent", PlicPhandle);
        w.Cells("clock-frequency", UartClockHz);
        Reg(w, Uart16550.DefaultBase, UartSize);
        w.Strings("compatible", "ns16550a");
        w.EndNode();

        w.BeginNode($"test@{SifiveTest.DefaultBase:x}");
        w.Cells("phandle", TestPhandle);
        Reg(w, SifiveTest.DefaultBase, TestSize);
        w.Strings("compatible", "sifive,test1", "sifive,test0", "syscon");
        w.EndNode();

        // Highest slot first, as QEMU writes them (the kernel then numbers the devices the same way).
        for (int slot = o.VirtioSlots - 1; slot >= 0; slot--)
        {
            ulong b = VirtioMmio.SlotBase(slot);
            w.BeginNode($"virtio_mmio@{b:x}");
            w.Cells("interrupts", (uint)VirtioMmio.SlotIrq(slot));
            w.Cells("interrupt-parent", PlicPhandle);
            Reg(w, b, VirtioMmio.SlotSize);
            w.Strings("compatible", "virtio,mmio");
            w.EndNode();
        }

        w.BeginNode($"plic@{Plic.DefaultBase:x}");
        w.Cells("phandle", PlicPhandle);
        w.Cells("riscv,ndev", Plic.Sources - 1);
        Reg(w, Plic.DefaultBase, PlicSize);
        // Context 0 is the hart's M-mode external interrupt, context 1 its S-mode one.
        w.Cells("interrupts-extended", CpuIntcPhandle, IrqMExternal, CpuIntcPhandle, IrqSExternal);
        w.Property("interrupt-controller");
        w.Strings("compatible", "sifive,plic-1.0.0", "riscv,plic0");
        w.Cells("#address-cells", 0);
        w.Cells("#interrupt-cells", 1);
        w.EndNode();

        w.BeginNode($"clint@{Clint.DefaultBase:x}");
        w.Cells("interrupts-extended", CpuIntcPhandle, IrqMSoft, CpuIntcPhandle, IrqMTimer);
        Reg(w, Clint.DefaultBase, ClintSize);
        w.Strings("compatible", "sifive,clint0", "riscv,clint0");
        w.EndNode();

        w.EndNode(); // soc
        w.EndNode(); // root
        return w.Finish();
    }

    private static void Cpus(FdtWriter w, DeviceTreeOptions o)
    {
        w.BeginNode("cpus");
        w.Cells("#address-cells", 1);
        w.Cells("#size-cells", 0);
        w.Cells("timebase-frequency", (uint)Clint.Frequency);

        w.BeginNode("cpu@0");
        w.Cells("phandle", CpuPhandle);
        w.Strings("device_type", "cpu");
        w.Cells("reg", 0);
        w.Strings("status", "okay");
        w.Strings("compatible", "riscv");
        w.Strings("riscv,isa", o.Isa);
        w.Strings("mmu-type", o.MmuType);
        w.BeginNode("interrupt-controller");
        w.Cells("#interrupt-cells", 1);
        w.Property("interrupt-controller");
        w.Strings("compatible", "riscv,cpu-intc");
        w.Cells("phandle", CpuIntcPhandle);
        w.EndNode();
        w.EndNode();

        w.BeginNode("cpu-map");
        w.BeginNode("cluster0");
        w.BeginNode("core0");
        w.Cells("cpu", CpuPhandle);
        w.EndNode();
        w.EndNode();
        w.EndNode();
        w.EndNode();
    }

    private static void SysconAction(FdtWriter w, string name, uint value)
    {
        w.BeginNode(name);
        w.Cells("value", value);
        w.Cells("offset", 0);
        w.Cells("regmap", TestPhandle);
        w.Strings("compatible", $"syscon-{name}");
        w.EndNode();
    }

    private static void Reg(FdtWriter w, ulong address, ulong size)
        => w.Cells("reg", (uint)(address >> 32), (uint)address, (uint)(size >> 32), (uint)size);
}
