using System.Globalization;
using System.Text.RegularExpressions;
using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Tests.Infra;
using Xunit.Abstractions;

namespace LiveMigration.Guest.Tests.Platform;

/// <summary>
/// The QEMU oracle for the Linux guest: our kernel and initramfs boot under QEMU 7.2's virt with the
/// same firmware, device set and hart extensions our machine has, reach the banner, serve the kv
/// protocol and the command loop on the console, and power off.
/// </summary>
public partial class LinuxQemuTests(ITestOutputHelper log)
{
    private static readonly TimeSpan Boot = TimeSpan.FromMinutes(3), Reply = TimeSpan.FromSeconds(30);

    public static List<string> QemuArgs(string image, string initramfs, string append) =>
    [
        "-M", "virt", "-cpu", DeviceTreeTests.QemuCpu, "-m", "256M", "-smp", "1",
        "-bios", DeviceTreeTests.Firmware, "-kernel", image, "-initrd", initramfs, "-append", append,
        "-display", "none", "-serial", "stdio", "-monitor", "none", "-nodefaults",
        .. VirtioBus.QemuDeviceArgs(VirtioBus.KernelBootDevices),
    ];

    [RequiresToolFact("qemu-system-riscv64")]
    public void BootsToTheBannerServesKvAndPowersOff()
    {
        var (image, initramfs) = LiveMigration.Tests.Shared.RepoPaths.LinuxGuest();
        using var qemu = new ConsoleProcess("qemu-system-riscv64", QemuArgs(image, initramfs, "console=ttyS0 earlycon"));

        string boot = qemu.WaitFor("kv ready\n", Boot);
        var banner = BannerLine().Match(boot);
        Assert.True(banner.Success, $"no banner in:\n{boot}");
        Assert.StartsWith("6.1.", banner.Groups["release"].Value);
        double seconds = double.Parse(banner.Groups["seconds"].Value, CultureInfo.InvariantCulture);
        Assert.InRange(seconds, 0.001, 180);
        log.WriteLine($"QEMU 7.2 TCG: kernel {banner.Groups["release"].Value} reached the banner at {seconds:F3} s guest uptime");
        Assert.Contains("Machine model: riscv-virtio,qemu", boot);
        Assert.Contains("OpenSBI", boot);

        Assert.Equal("OK", qemu.Ask("SET greeting hello world", Reply));
        Assert.Equal("hello world", qemu.Ask("GET greeting", Reply));
        Assert.Equal("NOTFOUND", qemu.Ask("GET missing", Reply));
        Assert.Equal("ERR", qemu.Ask("BOGUS", Reply));
        Assert.Equal("OK", qemu.Ask("DEL greeting", Reply));
        Assert.Equal("keys 0 sets 1 gets 2 dels 1", qemu.Ask("STATS", Reply));
        Assert.Matches(@"^up \d+\.\d\d s idle \d+\.\d\d s$", qemu.Ask("uptime", Reply));
        qemu.Send("free");
        string free = qemu.WaitFor("MemAvailable:", Reply) + qemu.WaitFor("\n", Reply);
        Assert.Contains("MemTotal:", free);

        qemu.Send("cat /proc/interrupts");
        qemu.Send("STATS"); // a marker after the file
        string interrupts = qemu.WaitFor("keys 0 sets 1 gets 2 dels 1\n", Reply);
        Assert.Contains("ttyS0", interrupts);
        Assert.Contains("virtio0", interrupts); // rng and balloon probed on their slots
        Assert.Contains("virtio1", interrupts);

        qemu.Send("poweroff");
        Assert.Equal(0, qemu.WaitForExit(Reply));
    }

    [GeneratedRegex(@"LM Linux guest: Linux (?<release>\S+) .*, booted in (?<seconds>\d+\.\d+) s")]
    private static partial Regex BannerLine();
}
