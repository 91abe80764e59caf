namespace LiveMigration.Trace;

/// <summary>A trace (or checkpoint) whose bytes are not valid, reported with the byte offset where it went wrong.</summary>
public class TraceFormatException : Exception
{
    public TraceFormatException(long offset, string reason) : this(offset, reason, $"trace corrupt at byte {offset}: {reason}") { }

    protected TraceFormatException(long offset, string reason, string message) : base(message)
    {
        Offset = offset;
        Reason = reason;
    }

    /// <summary>Byte offset in the trace (or checkpoint file) of the first bad byte or of the frame that holds it.</summary>
    public long Offset { get; }
    public string Reason { get; }
}

/// <summary>The trace ends in the middle of a frame or without its end marker (e.g. the recorder was killed).</summary>
public sealed class TraceTruncatedException(long offset, string reason)
    : TraceFormatException(offset, reason, $"trace truncated at byte {offset}: {reason}");
