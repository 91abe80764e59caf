using System.Diagnostics;
using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Tests.Infra;
using Xunit.Abstractions;

namespace LiveMigration.Guest.Tests.Platform;

/// <summary>
/// The Linux guest's ext4 data disk (guests/linux/build/data.img, mounted on /data): the kv server's
/// acknowledged SETs and DELs are on the disk, so a second boot on the same image answers with them,
/// under ours and under QEMU 7.2 reading the image ours wrote; the file system stays clean (e2fsck).
/// </summary>
public class LinuxDataDiskTests(ITestOutputHelper log)
{
    private static string Boot(ConsoleProcess guest)
    {
        string boot = guest.WaitFor("kv ready\n", LinuxSession.Boot);
        Assert.Contains("EXT4-fs (vda): mounted filesystem", boot);
        Assert.DoesNotContain("I/O error", boot);
        return boot;
    }

    private static void PowerOff(ConsoleProcess guest, string command)
    {
        guest.Send(command);
        Assert.Equal(0, guest.WaitForExit(LinuxSession.Reply));
        Assert.Contains("EXT4-fs (vda): unmounting filesystem", guest.Output);
    }

    [RequiresToolFact("qemu-system-riscv64")]
    public void Acknowledged_sets_survive_a_power_off_and_read_back_under_ours_and_qemu()
    {
        var (image, initramfs) = LiveMigration.Tests.Shared.RepoPaths.LinuxGuest();
        string dir = Directory.CreateTempSubdirectory("lm-linux-data-").FullName;
        try
        {
            string disk = LiveMigration.Tests.Shared.RepoPaths.LinuxDataDisk(Path.Combine(dir, "data.img"));
            var expected = new Dictionary<string, string>();
            const int Keys = 100;
            using (var lm = new ConsoleProcess("dotnet", LinuxQemuTests.OursArgs(image, initramfs, "--drive", disk)))
            {
                Assert.Contains("kv: 0 keys from /data/kv.log (0 records)\n", Boot(lm));
                var clock = Stopwatch.StartNew();
                for (int i = 0; i < Keys; i++)
                {
                    Assert.Equal("OK", lm.Ask($"SET key{i} value-{i}-{new string('x', i % 40)}", LinuxSession.Reply));
                    expected[$"key{i}"] = $"value-{i}-{new string('x', i % 40)}";
                }
                log.WriteLine($"ours: {Keys / clock.Elapsed.TotalSeconds:F0} SETs/s, one at a time, each fdatasync'd before its OK");
                Assert.Equal("OK", lm.Ask("SET key7 rewritten", LinuxSession.Reply));
                expected["key7"] = "rewritten";
                Assert.Equal("OK", lm.Ask("DEL key8", LinuxSession.Reply));
                expected.Remove("key8");
                Assert.Equal("NOTFOUND", lm.Ask("DEL key8", LinuxSession.Reply));
                PowerOff(lm, "poweroff");
            }

            using (var lm = new ConsoleProcess("dotnet", LinuxQemuTests.OursArgs(image, initramfs, "--drive", disk)))
            {
                // Compacted at the first start: one record per key now.
                Assert.Contains($"kv: {Keys - 1} keys from /data/kv.log (102 records)\n", Boot(lm));
                Assert.Equal($"keys {Keys - 1} sets 0 gets 0 dels 0", lm.Ask("STATS", LinuxSession.Reply));
                foreach (var (k, v) in expected) Assert.Equal(v, lm.Ask($"GET {k}", LinuxSession.Reply));
                Assert.Equal("NOTFOUND", lm.Ask("GET key8", LinuxSession.Reply));
                Assert.Equal("OK", lm.Ask("SET second boot", LinuxSession.Reply));
                expected["second"] = "boot";
                PowerOff(lm, "QUIT");
            }
            Fsck(disk);

            using (var qemu = new ConsoleProcess("qemu-system-riscv64", [.. LinuxQemuTests.QemuArgs(image, initramfs, "console=ttyS0 earlycon"),
                "-drive", $"file={disk},format=raw,if=none,id=d0", .. VirtioBus.QemuDeviceArgs(VirtioDevices.Block)]))
            {
                Assert.Contains($"kv: {expected.Count} keys from /data/kv.log ({expected.Count} records)\n", Boot(qemu));
                foreach (var (k, v) in expected) Assert.Equal(v, qemu.Ask($"GET {k}", LinuxSession.Reply));
                PowerOff(qemu, "poweroff");
            }
            Fsck(disk);
        }
        finally { Directory.Delete(dir, true); }
    }

    /// <summary>e2fsck, forced and read-only: the image our disk device left is a consistent ext4 file system.</summary>
    private void Fsck(string disk)
    {
        string e2fsck = new[] { "/usr/sbin/e2fsck", "/sbin/e2fsck" }.First(File.Exists);
        var r = Tool.Run(e2fsck, ["-fn", disk], timeoutMs: 60_000);
        log.WriteLine(System.Text.Encoding.UTF8.GetString(r.Stdout).Split('\n').LastOrDefault(l => l.Contains("files")) ?? "");
        Assert.True(r.ExitCode == 0, $"e2fsck -fn exited {r.ExitCode}:\n{System.Text.Encoding.UTF8.GetString(r.Stdout)}{r.Stderr}");
    }
}
