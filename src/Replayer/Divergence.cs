using LiveMigration.Trace;

namespace LiveMigration.Replayer;

/// <summary>Where and how a replay stopped matching its trace.</summary>
public sealed record Divergence(ulong Icount, string Reason, ulong? ExpectedDigest, ulong? ActualDigest, IReadOnlyList<TraceEvent> LastEvents)
{
    /// <summary>One line, for the CLI.</summary>
    public override string ToString() =>
        ExpectedDigest is { } exp
            ? $"diverged at icount {Icount}: state digest 0x{ActualDigest:x16}, trace says 0x{exp:x16}"
            : $"diverged at icount {Icount}: {Reason}";
}
