using System.Text;

namespace LiveMigration.Trace;

/// <summary>
/// One decoded event. <see cref="Value"/> holds the time, entropy, digest, checkpoint number or end
/// reason; <see cref="ExitCode"/> the exit code of an end event; <see cref="Data"/> the serial bytes
/// (a slice of the chunk's buffer: no copy per event).
/// </summary>
public readonly record struct TraceEvent(ulong Icount, EventKind Kind, ulong Value, long ExitCode, ReadOnlyMemory<byte> Data)
{
    /// <summary>True for inputs the machine takes between instructions (in Poll or WaitForInput).</summary>
    public bool IsBetweenInstructions => Kind is EventKind.TimeDelivered or EventKind.SerialInput or EventKind.StateDigest or EventKind.CheckpointMarker or EventKind.BlockCompletion;

    /// <summary>Stable one-line text (used by `lm trace dump` and the golden dumps: change only with the format version).</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append(Icount).Append(' ');
        switch (Kind)
        {
            case EventKind.TimeDelivered: sb.Append("time-delivered ").Append(Value); break;
            case EventKind.TimeRead: sb.Append("time-read ").Append(Value); break;
            case EventKind.SerialInput:
                sb.Append("serial-input ").Append(Data.Length).Append(" \"");
                foreach (byte b in Data.Span)
                {
                    if (b == '\\' || b == '"') sb.Append('\\').Append((char)b);
                    else if (b >= 0x20 && b < 0x7F) sb.Append((char)b);
                    else if (b == '\n') sb.Append("\\n");
                    else sb.Append("\\x").Append(b.ToString("x2"));
                }
                sb.Append('"');
                break;
            case EventKind.Entropy: sb.Append("entropy 0x").Append(Value.ToString("x4")); break;
            case EventKind.StateDigest: sb.Append("state-digest 0x").Append(Value.ToString("x16")); break;
            case EventKind.CheckpointMarker: sb.Append("checkpoint ").Append(Value); break;
            case EventKind.BlockCompletion: sb.Append("block-completion ").Append(Value); break;
            case EventKind.End: sb.Append("end ").Append(EndReasonName((EndReason)Value)).Append(" exit-code ").Append(ExitCode); break;
            default: sb.Append("kind-").Append((int)Kind); break;
        }
        return sb.ToString();
    }

    public static string EndReasonName(EndReason r) => r switch
    {
        EndReason.Exited => "exited",
        EndReason.InstructionLimit => "instruction-limit",
        EndReason.StopRequested => "stopped",
        EndReason.Idle => "idle",
        _ => $"reason-{(int)r}",
    };

    public static string KindName(EventKind k) => k switch
    {
        EventKind.TimeDelivered => "time-delivered",
        EventKind.TimeRead => "time-read",
        EventKind.SerialInput => "serial-input",
        EventKind.Entropy => "entropy",
        EventKind.StateDigest => "state-digest",
        EventKind.CheckpointMarker => "checkpoint",
        EventKind.BlockCompletion => "block-completion",
        EventKind.End => "end",
        _ => $"kind-{(int)k}",
    };
}
