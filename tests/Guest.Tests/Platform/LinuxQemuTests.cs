using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Tests.Infra;
using Xunit.Abstractions;

namespace LiveMigration.Guest.Tests.Platform;

/// <summary>
/// The QEMU oracle for the Linux guest: our kernel and initramfs boot under QEMU 7.2's virt with the
/// same firmware, device set and hart extensions our machine has, reach the banner, serve the kv
/// protocol and the command loop on the console, and power off.
/// </summary>
public class LinuxQemuTests(ITestOutputHelper log)
{
    public static List<string> QemuArgs(string image, string initramfs, string append) =>
    [
        "-M", "virt", "-cpu", DeviceTreeTests.QemuCpu, "-m", "256M", "-smp", "1",
        "-bios", DeviceTreeTests.Firmware, "-kernel", image, "-initrd", initramfs, "-append", append,
        "-display", "none", "-serial", "stdio", "-monitor", "none", "-nodefaults",
        .. VirtioBus.QemuDeviceArgs(VirtioBus.KernelBootDevices),
    ];

    /// <summary>
    /// The line that differs on purpose: OpenSBI finds our hart's Sstc (QEMU runs with sstc=false, so
    /// its firmware keeps the M-mode timer). Counts such as the PLIC's sources (95 vs QEMU's 96, see
    /// DeviceTreeTests) and reserved memory are numbers, normalised away.
    /// </summary>
    private static readonly string[] KnownDifferences = ["Boot HART ISA Extensions"];

    [RequiresToolFact("qemu-system-riscv64")]
    public void BootsToTheBannerServesKvAndPowersOffUnderQemuAndOursWithTheSameConsole()
    {
        var (image, initramfs) = LiveMigration.Tests.Shared.RepoPaths.LinuxGuest();
        string theirs, ours;
        using (var qemu = new ConsoleProcess("qemu-system-riscv64", QemuArgs(image, initramfs, "console=ttyS0 earlycon")))
        {
            var (release, seconds) = LinuxSession.Run(qemu);
            log.WriteLine($"QEMU 7.2 TCG: kernel {release} reached the banner at {seconds:F3} s guest uptime");
            theirs = qemu.Output;
        }
        using (var lm = new ConsoleProcess("dotnet", OursArgs(image, initramfs)))
        {
            var (release, seconds) = LinuxSession.Run(lm);
            log.WriteLine($"ours: kernel {release} reached the banner at {seconds:F3} s guest uptime");
            ours = lm.Output;
        }
        bool Known(string line) => KnownDifferences.Any(line.Contains);
        var a = LinuxSession.Normalised(theirs).Where(l => !Known(l)).ToList();
        var b = LinuxSession.Normalised(ours).Where(l => !Known(l)).ToList();
        Assert.True(a.SequenceEqual(b), "consoles differ:\n" + string.Join("\n", a.Except(b).Select(l => "qemu: " + l).Concat(b.Except(a).Select(l => "ours: " + l))));
    }

    public static List<string> OursArgs(string image, string initramfs, params string[] extra) =>
        [Cli.LmRunTests.LmDll.Value, "run", "--mem", "256M", "--kernel", image, "--initrd", initramfs, "--append", "console=ttyS0 earlycon", .. extra];

}
