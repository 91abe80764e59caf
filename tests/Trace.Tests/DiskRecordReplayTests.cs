using System.Text;
using LiveMigration.Guest;
using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Devices.Virtio.Block;
using LiveMigration.Guest.Loader;
using LiveMigration.Recorder;
using LiveMigration.Replayer;

namespace LiveMigration.Trace.Tests;

/// <summary>
/// A guest with a disk records and replays bit-exact: the trace logs when requests complete (not
/// the data read), names the image, and replays from checkpoints whose disk overlay it carries.
/// Replay against another image is refused; replay never writes the image.
/// </summary>
public class DiskRecordReplayTests
{
    private static byte[] Image(int seed = 21)
    {
        var b = new byte[1 << 20];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static (byte[] Trace, string Output, ulong Digest, MemoryDiskBacking Store) RecordBlk(ulong checkpointInterval = 0)
    {
        var store = new MemoryDiskBacking(Image());
        var disk = Disk.Open(store);
        byte[] elf = File.ReadAllBytes(Repo.Guest("blk"));
        var ms = new MemoryStream();
        using var machine = new Machine(new MachineConfig { Virtio = VirtioDevices.Block }, new ScriptedHostPort());
        machine.InsertDisk(disk);
        ElfLoader.Load(machine, elf);
        var options = new RecorderOptions { DigestInterval = 1 << 20, CheckpointInterval = checkpointInterval, FlushInterval = null };
        using var recorder = TraceRecorder.Start(ms, machine, elf, "blk.elf", "scripted", options);
        var port = new ScriptedHostPort(null, recorder);
        machine.HostPort = port;
        var reason = machine.Run(2_000_000_000);
        Assert.Equal(StopReason.Exited, reason);
        recorder.Finish(machine, reason);
        return (ms.ToArray(), Encoding.ASCII.GetString(port.Output.ToArray()), machine.ComputeDigest(), store);
    }

    private static (ReplayStatus Status, string Output, ulong Digest, Divergence? Divergence) Replay(byte[] trace, Disk? disk, ulong startAt = 0)
    {
        using var file = TraceFile.Open(new MemoryStream(trace));
        var output = new MemoryStream();
        using var session = ReplaySession.OpenFile(file, new ReplayOptions { Output = output.WriteByte, Disk = disk }, startAt);
        var status = session.Run(ulong.MaxValue);
        return (status, Encoding.ASCII.GetString(output.ToArray()), session.Machine.ComputeDigest(), session.Divergence);
    }

    [Fact]
    public void BlkGuestReplaysFaithfullyAgainstTheOriginalImage()
    {
        var (trace, output, digest, store) = RecordBlk();
        Assert.Contains("blk: done", output);
        Assert.NotEqual(Image(), store.Bytes); // the recording's flushes reached its image

        using (var file = TraceFile.Open(new MemoryStream(trace)))
        {
            Assert.Equal(Disk.Open(new MemoryDiskBacking(Image())).BaseIdentity, file.Header.DiskImageDigest);
            var kinds = file.Events().Select(e => e.Kind).ToList();
            Assert.Contains(EventKind.BlockCompletion, kinds);
        }

        var original = new MemoryDiskBacking(Image(), writable: false);
        var replay = Replay(trace, Disk.Open(original));
        Assert.Null(replay.Divergence);
        Assert.Equal(ReplayStatus.Finished, replay.Status);
        Assert.Equal(output, replay.Output);
        Assert.Equal(digest, replay.Digest);
        Assert.Equal(Image(), original.Bytes);
    }

    [Fact]
    public void ReplayFromACheckpointCarriesTheDiskOverlay()
    {
        var (trace, output, digest, _) = RecordBlk(checkpointInterval: 1 << 21);
        using (var file = TraceFile.Open(new MemoryStream(trace)))
            Assert.Contains(file.Frames, f => f.Kind == FrameKind.Checkpoint && f.FirstIcount > 0);
        var replay = Replay(trace, Disk.Open(new MemoryDiskBacking(Image(), writable: false)), startAt: 6 << 20);
        Assert.Null(replay.Divergence);
        Assert.Equal(ReplayStatus.Finished, replay.Status);
        Assert.Equal(digest, replay.Digest);
        Assert.EndsWith("blk: done\n", replay.Output);
        Assert.True(output.EndsWith(replay.Output));
    }

    [Fact]
    public void ReplayAgainstAnotherImageOrNoneIsRefusedInOneLine()
    {
        var (trace, _, _, store) = RecordBlk();
        var e = Assert.Throws<InvalidDataException>(() => Replay(trace, Disk.Open(new MemoryDiskBacking(store.Bytes))));
        Assert.Contains("the trace was recorded on image", e.Message);
        Assert.DoesNotContain("\n", e.Message);
        var none = Assert.Throws<InvalidDataException>(() => Replay(trace, null));
        Assert.Contains("--drive", none.Message);
    }
}
