using static LiveMigration.Migration.Protocol.Envelope;

namespace LiveMigration.Migration.Protocol;

/// <summary>
/// The largest payload each message type may announce. A frame header is read before any of its
/// payload, so a header announcing more than its type can need is refused at once (a StatusRequest
/// is a few bytes, not 64 MiB), and the buffer then grows only as payload bytes really arrive.
/// </summary>
public static class FrameLimits
{
    public const int Small = 64 << 10;
    /// <summary>Largest ELF image `lm start` sends (and a host accepts).</summary>
    public const int MaxElf = 64 << 20;
    /// <summary>A batch of 256 pages: ≤ zstd's bound of 1 MiB, plus page numbers and hashes.</summary>
    public const int PageBatch = 2 << 20;
    /// <summary>A log chunk carries one trace events frame (64 KiB of events by default, one oversized event at most).</summary>
    public const int LogChunk = 16 << 20;
    /// <summary>Device state, console input not consumed yet and console output nobody read (≤ 1 MiB).</summary>
    public const int State = 16 << 20;
    /// <summary>A page list for the largest guest (16 GiB: 4 Mi pages at ≤ 5 bytes each).</summary>
    public const int PageList = 32 << 20;

    public static int Max(ushort type) => (BodyOneofCase)type switch
    {
        BodyOneofCase.StartGuest => MaxElf + Small,
        BodyOneofCase.Pages or BodyOneofCase.PostcopyPages or BodyOneofCase.DeltaPages or BodyOneofCase.DiskBlocks => PageBatch,
        BodyOneofCase.ZeroPages => 1 << 20,
        BodyOneofCase.Log => LogChunk,
        BodyOneofCase.CheckpointDone or BodyOneofCase.FinalState or BodyOneofCase.Go or BodyOneofCase.GoAnswer => State,
        BodyOneofCase.PostcopyManifest or BodyOneofCase.PostcopyResumeReply => PageList,
        BodyOneofCase.DiskDone => PageList, // post-copy: the absent blocks as runs
        BodyOneofCase.SetupReply => PageList, // with a disk base: 8 bytes per block (disks up to 16 GiB)
        BodyOneofCase.StatusReply or BodyOneofCase.Report => 8 << 20,
        BodyOneofCase.None => 0,
        _ when Enum.IsDefined((BodyOneofCase)type) => Small,
        _ => 0, // an unknown type has no payload we could use
    };
}
