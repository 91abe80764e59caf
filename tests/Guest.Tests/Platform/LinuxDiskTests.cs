using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Tests.Infra;
using Xunit.Abstractions;

namespace LiveMigration.Guest.Tests.Platform;

/// <summary>Linux 6.1's virtio_blk driver finds and reads our disk (the partition scan at probe) as it does QEMU 7.2's, on the same slot.</summary>
public class LinuxDiskTests(ITestOutputHelper log)
{
    private const string Probe = "virtio_blk virtio2: [vda] 2048 512-byte logical blocks (1.05 MB/1.00 MiB)";

    private static string Image(string dir, string name)
    {
        string path = Path.Combine(dir, name);
        File.WriteAllBytes(path, Differential.BlkQemuDifferentialTests.TestImage());
        return path;
    }

    private static string BootToKv(ConsoleProcess guest)
    {
        string boot = guest.WaitFor("kv ready\n", LinuxSession.Boot);
        guest.Send("poweroff");
        Assert.Equal(0, guest.WaitForExit(LinuxSession.Reply));
        return boot;
    }

    [RequiresToolFact("qemu-system-riscv64")]
    public void KernelProbesTheDiskUnderQemuAndOurs()
    {
        var (image, initramfs) = LiveMigration.Tests.Shared.RepoPaths.LinuxGuest();
        string dir = Directory.CreateTempSubdirectory("lm-linux-disk-").FullName;
        try
        {
            string qemuDisk = Image(dir, "qemu.img"), ourDisk = Image(dir, "ours.img");
            string theirs, ours;
            using (var qemu = new ConsoleProcess("qemu-system-riscv64", [.. LinuxQemuTests.QemuArgs(image, initramfs, "console=ttyS0 earlycon"),
                "-drive", $"file={qemuDisk},format=raw,if=none,id=d0", .. VirtioBus.QemuDeviceArgs(VirtioDevices.Block)]))
                theirs = BootToKv(qemu);
            using (var lm = new ConsoleProcess("dotnet", LinuxQemuTests.OursArgs(image, initramfs, "--drive", ourDisk)))
                ours = BootToKv(lm);
            Assert.Contains(Probe, theirs);
            Assert.Contains(Probe, ours);
            Assert.DoesNotContain("I/O error", ours);
            log.WriteLine(ours.Split('\n').First(l => l.Contains("[vda]")));
        }
        finally { Directory.Delete(dir, true); }
    }
}
