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
        };
    }

    public static MachineConfig ToConfig(this TraceHeader header) => new() { MemorySize = header.Machine.MemorySize };
}
