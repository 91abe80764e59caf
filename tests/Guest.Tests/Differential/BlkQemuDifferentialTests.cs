using System.Text;
using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Devices.Virtio.Block;
using LiveMigration.Guest.Loader;
using LiveMigration.Guest.Tests.Infra;
using LiveMigration.Recorder.Disk;

namespace LiveMigration.Guest.Tests.Differential;

/// <summary>
/// The disk workload (guests/blk.c) under QEMU 7.2's virtio-blk and under ours, on copies of the
/// same raw image: the same UART output (capacity, checksums of what was read, the IOERR past the
/// end) and, after the guest's flushes, byte-identical image files.
/// </summary>
public class BlkQemuDifferentialTests
{
    private const string Qemu = "qemu-system-riscv64";

    public static byte[] TestImage()
    {
        var bytes = new byte[1 << 20];
        new Random(13).NextBytes(bytes);
        bytes.AsSpan(64 << 10, 64 << 10).Clear(); // a run of zero blocks
        return bytes;
    }

    [RequiresToolFact(Qemu)]
    public void OutputAndFlushedImageMatchQemu()
    {
        string dir = Directory.CreateTempSubdirectory("lm-blk-").FullName;
        try
        {
            string qemuImage = Path.Combine(dir, "qemu.img"), ourImage = Path.Combine(dir, "ours.img");
            File.WriteAllBytes(qemuImage, TestImage());
            File.WriteAllBytes(ourImage, TestImage());
            string elf = Repo.Guest("blk");
            // virtio-mmio.force-legacy=false: QEMU 7.2's transports are version 1 unless told, ours are version 2.
            var qemu = HandWritten.RunOnQemu(elf, ["-global", "virtio-mmio.force-legacy=false",
                "-drive", $"file={qemuImage},format=raw,if=none,id=d0", .. VirtioBus.QemuDeviceArgs(VirtioDevices.Block)]);
            Assert.False(qemu.TimedOut, "QEMU did not finish blk in 60 s");

            var port = new TestHostPort();
            using var disk = DriveSpec.Parse(ourImage).Open();
            using var m = new Machine(new MachineConfig { Virtio = VirtioDevices.Block }, port);
            m.InsertDisk(disk);
            ElfLoader.Load(m, File.ReadAllBytes(elf));
            var reason = m.Run(2_000_000_000);

            string text = Encoding.ASCII.GetString(qemu.Stdout);
            Assert.Contains("blk: done", text);
            Assert.Contains("read past the end status 1", text);
            Assert.Equal(text, port.OutputText);
            Assert.Equal(StopReason.Exited, reason);
            Assert.Equal(qemu.ExitCode, m.ExitCode);
            Assert.True(disk.CommitCount > 0);
            Assert.Equal(File.ReadAllBytes(qemuImage), File.ReadAllBytes(ourImage));
            Assert.NotEqual(TestImage(), File.ReadAllBytes(ourImage));
        }
        finally { Directory.Delete(dir, true); }
    }
}
