using LiveMigration.Guest;
using LiveMigration.Trace;
using LiveMigration.Trace.Schema;

namespace LiveMigration.Replayer;

public sealed record ReplayOptions
{
    /// <summary>Compare every state digest (off: only the structure of the inputs is checked).</summary>
    public bool Verify { get; init; } = true;
    /// <summary>Receives the guest's UART output.</summary>
    public Action<byte>? Output { get; init; }
    /// <summary>The drive of a trace recorded with one: the image as it was when recording began (opened without committing).</summary>
    public Guest.Devices.Virtio.Block.Disk? Disk { get; init; }
}

/// <summary>Why <see cref="ReplaySession.Run"/> returned.</summary>
public enum ReplayStatus
{
    /// <summary>The machine reached the end event and ended as recorded: a faithful replay.</summary>
    Finished,
    /// <summary>The machine reached the requested icount.</summary>
    ReachedUntil,
    /// <summary>All events received so far are consumed: add frames and call Run again.</summary>
    NeedMoreEvents,
    /// <summary>See <see cref="ReplaySession.Divergence"/>.</summary>
    Diverged,
    /// <summary>The input completed without an end event (a truncated trace); everything before it replayed.</summary>
    TraceEnded,
    /// <summary>The machine stopped for a debugger: a breakpoint or watchpoint (<see cref="Guest.Debug.DebugHooks.LastStop"/>) or <see cref="Machine.RequestStop"/>.</summary>
    Stopped,
}

/// <summary>
/// Replays a trace into a machine, from a checkpoint, as far as the events allow. The same session
/// serves a file (frames pulled on demand, <see cref="OpenFile"/>) and a migration destination
/// (frames pushed with <see cref="AddFrame"/> as they arrive from a <see cref="TraceStreamReader"/>,
/// <see cref="Run"/> called after each batch; it returns <see cref="ReplayStatus.NeedMoreEvents"/>
/// when it has caught up).
/// </summary>
public sealed class ReplaySession : IDisposable
{
    private readonly EventQueue _events;
    private readonly bool _ownsMachine;

    private ReplaySession(Machine machine, EventQueue events, ReplayOptions options, bool ownsMachine)
    {
        _events = events;
        _ownsMachine = ownsMachine;
        Port = new ReplayHostPort(events, options.Verify, options.Output);
        Machine = machine;
        machine.HostPort = Port;
    }

    public Machine Machine { get; }
    public ReplayHostPort Port { get; }
    public Divergence? Divergence => Port.Divergence;
    /// <summary>Icount at which the session started (its checkpoint's).</summary>
    public ulong StartIcount { get; private init; }

    /// <summary>A push session: a machine restored from <paramref name="checkpointFile"/>; frames come via <see cref="AddFrame"/>.</summary>
    public static ReplaySession FromCheckpoint(ReadOnlySpan<byte> checkpointFile, ReplayOptions options)
    {
        var events = new EventQueue();
        var machine = CheckpointFile.Load(checkpointFile, NullHostPort.Instance);
        return new ReplaySession(machine, events, options, ownsMachine: true) { StartIcount = machine.Icount };
    }

    /// <summary>
    /// A push session on a machine the caller already holds at the trace's start (a migration
    /// destination that restored C0 from pages it received). The caller keeps ownership of the machine.
    /// </summary>
    public static ReplaySession FromMachine(Machine machine, ReplayOptions options) =>
        new(machine, new EventQueue(), options, ownsMachine: false) { StartIcount = machine.Icount };

    /// <summary>A push session starting at the header's initial checkpoint (a migration destination after the header frame).</summary>
    public static ReplaySession FromHeader(TraceHeader header, ReplayOptions options)
    {
        if (header.InitialCheckpoint.IsEmpty) throw new InvalidDataException($"the trace does not embed its initial checkpoint (it refers to '{header.CheckpointReference}')");
        return FromCheckpoint(header.InitialCheckpoint.Span, options);
    }

    /// <summary>
    /// A pull session over a trace file, starting from the latest checkpoint at or before
    /// <paramref name="startAt"/> (the header's initial checkpoint, or a checkpoint frame).
    /// </summary>
    public static ReplaySession OpenFile(TraceFile file, ReplayOptions options, ulong startAt = 0)
    {
        var (checkpoint, fromFrame) = LatestCheckpoint(file, startAt);
        if (checkpoint.IsEmpty) throw new InvalidDataException($"the trace does not embed its initial checkpoint (it refers to '{file.Header.CheckpointReference}')");
        return Open(file, options, checkpoint.Span, fromFrame);
    }

    /// <summary>
    /// A pull session over a trace file starting from an external checkpoint of the same run (e.g. one
    /// saved by `lm replay --until N --save-checkpoint`): events before its icount are skipped.
    /// </summary>
    public static ReplaySession OpenFile(TraceFile file, ReplayOptions options, ReadOnlySpan<byte> checkpointFile)
    {
        var info = CheckpointFile.ReadInfo(checkpointFile);
        if (info.Icount < file.Header.StartIcount) throw new InvalidDataException($"the checkpoint (icount {info.Icount}) is older than the trace's start (icount {file.Header.StartIcount})");
        var (_, fromFrame) = LatestCheckpoint(file, info.Icount);
        return Open(file, options, checkpointFile, fromFrame);
    }

    private static (ReadOnlyMemory<byte> Checkpoint, int FromFrame) LatestCheckpoint(TraceFile file, ulong icount)
    {
        int fromFrame = 1;
        ReadOnlyMemory<byte> checkpoint = file.Header.InitialCheckpoint.Memory;
        var frames = file.Frames;
        for (int i = 1; i < frames.Count; i++)
        {
            if (frames[i].Kind != FrameKind.Checkpoint || frames[i].FirstIcount > icount) continue;
            checkpoint = file.ReadFrame(frames[i]).Payload;
            fromFrame = i + 1;
        }
        return (checkpoint, fromFrame);
    }

    private static ReplaySession Open(TraceFile file, ReplayOptions options, ReadOnlySpan<byte> checkpoint, int fromFrame)
    {
        var source = file.ReadFrames(fromFrame).GetEnumerator();
        var events = new EventQueue(() => source.MoveNext() ? source.Current : null);
        file.Header.CheckDisk(options.Disk);
        var machine = CheckpointFile.Load(checkpoint, NullHostPort.Instance, options.Disk);
        if (machine.Config.MemorySize != file.Header.Machine.MemorySize)
        {
            machine.Dispose();
            throw new InvalidDataException("the checkpoint is of a machine with a different RAM size than the trace's");
        }
        events.SkipBefore = machine.Icount;
        return new ReplaySession(machine, events, options, ownsMachine: true) { StartIcount = machine.Icount };
    }

    /// <summary>
    /// A pull session around <paramref name="machine"/>, which the caller has put in a state of this
    /// run at its icount N, as <see cref="Run"/> leaves it (between-instruction inputs at N already
    /// applied). Events are read from the first frame that can hold one at N. The session does not
    /// own the machine (a debugger restores its own checkpoints into one machine).
    /// </summary>
    public static ReplaySession Resume(TraceFile file, ReplayOptions options, Machine machine)
    {
        ulong icount = machine.Icount;
        var frames = file.Frames;
        int from = frames.Count;
        for (int i = 1; i < frames.Count; i++)
            if (frames[i].EndIcount >= icount) { from = i; break; }
        var source = file.ReadFrames(from).GetEnumerator();
        var events = new EventQueue(() => source.MoveNext() ? source.Current : null) { SkipBefore = icount, SkipAppliedAtStart = true };
        return new ReplaySession(machine, events, options, ownsMachine: false) { StartIcount = icount };
    }

    /// <summary>Hands the session the next frame of the trace (events, checkpoint, index or end; the header is not passed).</summary>
    public void AddFrame(TraceFrame frame)
    {
        if (frame.Kind == FrameKind.Header) throw new ArgumentException("the header frame starts a session; it is not added to one", nameof(frame));
        _events.Add(frame);
        if (frame.Kind == FrameKind.End) _events.Complete();
    }

    /// <summary>Decodes every whole frame <paramref name="reader"/> holds and adds it; returns how many.</summary>
    public int AddFrames(TraceStreamReader reader)
    {
        int n = 0;
        while (reader.TryReadFrame(out var frame) == StreamReadStatus.Frame)
        {
            if (frame!.Kind == FrameKind.Header) continue;
            AddFrame(frame);
            n++;
        }
        return n;
    }

    /// <summary>No more frames will come (the sender went away). A trace without its end event then ends the replay as truncated.</summary>
    public void CompleteInput() { if (!_events.InputComplete) _events.Complete(); }

    /// <summary>Why the machine last returned inside <see cref="Run"/> (tells a debug stop from a requested one after <see cref="ReplayStatus.Stopped"/>).</summary>
    public StopReason LastMachineStop { get; private set; }

    /// <summary>Highest icount the received frames let the machine reach.</summary>
    public ulong Horizon => _events.Horizon;

    /// <summary>Runs until the end of the trace, <paramref name="until"/>, a divergence, or the end of the events received so far.</summary>
    public ReplayStatus Run(ulong until = ulong.MaxValue)
    {
        while (true)
        {
            if (Port.Divergence != null) return ReplayStatus.Diverged;
            if (Port.End is { } end) return CheckEnd(end);
            ulong icount = Machine.Icount;
            bool any = _events.TryPeek(out var next);
            // Inputs due now (and the end event) are taken here, exactly as the machine's poll would.
            if (any && (next.Icount < icount || (next.Icount == icount && (next.IsBetweenInstructions || next.Kind == EventKind.End))))
            {
                Port.Poll(Machine);
                continue;
            }
            if (icount >= until) return ReplayStatus.ReachedUntil;
            if (Machine.ExitCode != null)
                return any ? Diverged($"the guest exited with code {Machine.ExitCode} at icount {icount}, but the trace goes on with '{next}'") : Starved();
            // Never run past the horizon: inputs at or beyond it may still be in flight.
            ulong limit = Math.Min(until, _events.Horizon);
            if (limit <= icount)
            {
                if (_events.TryExtend()) continue;
                return Starved();
            }
            Port.ClearStarved();
            var reason = Machine.Run(limit);
            LastMachineStop = reason;
            if (reason is StopReason.Debug or StopReason.StopRequested && Port.Divergence == null && Port.End == null) return ReplayStatus.Stopped;
            if (reason == StopReason.Idle && Port.Divergence == null && Port.End == null)
                return Port.Starved ? Starved() : Diverged("the guest idles with no input left, but the trace goes on");
        }
    }

    private ReplayStatus Starved() =>
        _events.InputComplete ? (_events.EndFrameSeen ? Diverged("the trace's events ended without an end event") : ReplayStatus.TraceEnded)
                              : ReplayStatus.NeedMoreEvents;

    private ReplayStatus CheckEnd(TraceEvent end)
    {
        var recorded = (EndReason)end.Value;
        bool exited = Machine.ExitCode != null;
        // A checkpoint saved after the guest exited does not hold the exit (no device state does): nothing ran, nothing to compare.
        if (end.Icount == StartIcount && Machine.Icount == StartIcount) return ReplayStatus.Finished;
        if (recorded == EndReason.Exited && (!exited || Machine.ExitCode != end.ExitCode))
            return Diverged(exited ? $"the guest exited with code {Machine.ExitCode}; the trace says {end.ExitCode}" : $"the trace ends with the guest exiting (code {end.ExitCode}); the replay did not exit");
        if (recorded != EndReason.Exited && exited)
            return Diverged($"the guest exited with code {Machine.ExitCode}; the trace ends with '{TraceEvent.EndReasonName(recorded)}'");
        return ReplayStatus.Finished;
    }

    private ReplayStatus Diverged(string reason)
    {
        Port.Diverge(Machine, reason);
        return ReplayStatus.Diverged;
    }

    /// <summary>Checkpoints the machine where it stands (e.g. after Run(until)).</summary>
    public byte[] SaveCheckpoint() => CheckpointFile.Create(Machine);

    public void Dispose()
    {
        if (_ownsMachine) Machine.Dispose();
    }

}
