using System.IO.Hashing;
using LiveMigration.Guest;
using LiveMigration.Trace.Schema;

namespace LiveMigration.Trace;

/// <summary>Builds trace headers from a machine about to be recorded.</summary>
public static class TraceHeaders
{
    public const string Isa = "rv64imac_zicsr_zifencei";

    /// <summary>
    /// A header whose initial checkpoint is the machine as it is now (for a boot trace: right after the
    /// ELF is loaded) embedded whole, so the trace replays without the image.
    /// </summary>
    public static TraceHeader Create(Machine machine, ReadOnlySpan<byte> image, string imageName, string recorder,
        ulong digestInterval, ulong checkpointInterval)
    {
        byte[] checkpoint = CheckpointFile.Create(machine);
        var info = CheckpointFile.ReadInfo(checkpoint);
        return new TraceHeader
        {
            FormatVersion = TraceFormat.CurrentVersion,
            Machine = new MachineConfigProto { MemorySize = machine.Config.MemorySize, RamBase = machine.Memory.Base, Isa = Isa, Harts = 1 },
            ImageDigest = image.IsEmpty ? 0 : XxHash3.HashToUInt64(image),
            ImageName = imageName,
            StartIcount = info.Icount,
            StartDigest = info.Digest,
            InitialCheckpoint = Google.Protobuf.ByteString.CopyFrom(checkpoint),
            Recorder = recorder,
            DigestInterval = digestInterval,
            CheckpointInterval = checkpointInterval,
            DiskImageDigest = machine.Disk?.BaseIdentity ?? 0,
        };
    }

    public static MachineConfig ToConfig(this TraceHeader header) => new() { MemorySize = header.Machine.MemorySize };

    /// <summary>Checks that <paramref name="disk"/> is the image the trace was recorded on (one-line error otherwise).</summary>
    public static void CheckDisk(this TraceHeader header, Guest.Devices.Virtio.Block.Disk? disk)
    {
        if (header.DiskImageDigest == 0)
        {
            if (disk != null) throw new InvalidDataException("the trace was recorded without a drive; give no --drive");
            return;
        }
        if (disk == null) throw new InvalidDataException($"the trace was recorded with a drive (image 0x{header.DiskImageDigest:x16}); give it with --drive FILE");
        if (disk.BaseIdentity != header.DiskImageDigest)
            throw new InvalidDataException($"the drive is image 0x{disk.BaseIdentity:x16}; the trace was recorded on image 0x{header.DiskImageDigest:x16} (replay needs the image as it was when recording began)");
    }
}
