namespace LiveMigration.Trace;

/// <summary>Constants of the trace file format; FORMAT.md is the specification.</summary>
public static class TraceFormat
{
    /// <summary>
    /// Version written into new headers. Bump it on ANY change to what a writer emits (a header field,
    /// an event kind, an encoding); readers keep decoding every version from <see cref="MinReadableVersion"/>
    /// up, and traces/ keeps a golden trace of the previous version that must still replay.
    /// v1: first release. v2: header gains digest_interval and checkpoint_interval. v3: event kind
    /// <see cref="EventKind.BlockCompletion"/> and the header's disk_image_digest (virtio-blk).
    /// </summary>
    public const uint CurrentVersion = 3;

    /// <summary>The first version with disk events and the header's disk image digest.</summary>
    public const uint DiskVersion = 3;

    /// <summary>Oldest version this build reads. Raise only together with deleting that version's golden trace.</summary>
    public const uint MinReadableVersion = 1;

    /// <summary>"LMTRACE" then a NUL: the first 8 bytes of every trace file.</summary>
    public static ReadOnlySpan<byte> Magic => "LMTRACE\0"u8;

    public const int FrameHeaderSize = 36;

    /// <summary>Upper bound on a frame's stored and raw length; anything larger is treated as corruption.</summary>
    public const int MaxFrameLength = 1 << 30;

    /// <summary>Raw bytes of events after which the writer closes a chunk.</summary>
    public const int DefaultChunkSize = 64 * 1024;

    /// <summary>Payload of the end frame: index frame offset (u64) and final icount (u64).</summary>
    public const int EndPayloadSize = 16;
}

/// <summary>Frame kinds on the wire. Numbers are never reused.</summary>
public enum FrameKind : byte
{
    Header = 1,
    Events = 2,
    Checkpoint = 3,
    Index = 4,
    End = 5,
}

/// <summary>Frame flag bits.</summary>
[Flags]
public enum FrameFlags : byte
{
    None = 0,
    /// <summary>The payload is one zstd frame; raw length is its decompressed size.</summary>
    Zstd = 1,
}

/// <summary>Event kinds on the wire. Numbers are never reused; a new kind bumps the format version.</summary>
public enum EventKind : byte
{
    /// <summary>mtime delivered between instructions (Poll or WaitForInput). Payload: zigzag varint delta from the chunk's previous time value.</summary>
    TimeDelivered = 1,
    /// <summary>The guest read mtime/rdtime at exactly this icount. Payload as <see cref="TimeDelivered"/>.</summary>
    TimeRead = 2,
    /// <summary>Bytes delivered to the UART receiver. Payload: varint length, bytes.</summary>
    SerialInput = 3,
    /// <summary>The guest read the Zkr seed CSR. Payload: varint 16-bit value.</summary>
    Entropy = 4,
    /// <summary>Machine.ComputeDigest() at this icount, before any input at the same icount that follows it. Payload: u64 LE.</summary>
    StateDigest = 5,
    /// <summary>A checkpoint frame follows this chunk. Payload: varint checkpoint sequence number.</summary>
    CheckpointMarker = 6,
    /// <summary>The recording ended. Payload: u8 <see cref="EndReason"/>, zigzag varint exit code.</summary>
    End = 7,
    /// <summary>The oldest N disk requests in flight completed, between instructions. Payload: varint N (≥ 1). Only machines with virtio-blk log it.</summary>
    BlockCompletion = 8, // since v3
}

/// <summary>Why a recording ended (wire numbers, never reused).</summary>
public enum EndReason : byte
{
    Exited = 1,
    InstructionLimit = 2,
    StopRequested = 3,
    Idle = 4,
}
