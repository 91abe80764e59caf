using System.Diagnostics;
using LiveMigration.Guest;
using LiveMigration.Guest.Debug;
using LiveMigration.Trace;

namespace LiveMigration.Replayer.Gdb;

public enum StopKind { Step, Breakpoint, Watchpoint, Interrupted, ReplayBegin, ReplayEnd, Exited, Diverged }

/// <summary>Where and why the target stopped, as a gdb stop reply reports it.</summary>
public readonly record struct TargetStop(StopKind Kind, ulong Icount, Watchpoint Watch = default, ulong AccessAddress = 0, string? Message = null);

/// <summary>
/// Forward and reverse execution over a recorded run, for a debugger. One machine replays the
/// trace; gdb's breakpoints and watchpoints are armed in it only while running forward on its
/// behalf. Going back restores the nearest earlier in-memory checkpoint (<see cref="CheckpointCache"/>)
/// and replays forward; checkpoints are taken at an adaptive interval while replaying and where
/// the user stops. A write from the debugger forks the replay into a live run
/// (<see cref="ForkedHostPort"/>) and says so through <see cref="Notice"/>.
/// </summary>
public sealed class ReplayDebugger : IDisposable
{
    /// <summary>Floor and ceiling of the interval between automatic checkpoints.</summary>
    public const ulong MinInterval = 1 << 20, MaxInterval = 1 << 25;
    /// <summary>A stop this far from every checkpoint gets one of its own.</summary>
    public const ulong StopCheckpointDistance = 1 << 16;

    private readonly TraceFile _file;
    private readonly ReplayOptions _options;
    private readonly ReplaySession _root;
    private readonly HashSet<ulong> _breakpoints = [];
    private readonly List<Watchpoint> _watchpoints = [];
    private ReplaySession? _session;
    private ulong _interval = MinInterval;
    private volatile bool _interrupt;

    public ReplayDebugger(TraceFile file, ReplayOptions options, CheckpointCache? cache = null)
    {
        _file = file;
        _options = options;
        _root = ReplaySession.OpenFile(file, options, 0);
        Machine = _root.Machine;
        _session = _root;
        StartIcount = _root.StartIcount;
        Checkpoints = cache ?? new CheckpointCache();
        var first = _root.Run(Machine.Icount); // take the inputs due at the start, as every checkpoint has them
        if (first == ReplayStatus.Diverged) throw new InvalidDataException($"replay {_root.Divergence}");
        TakeCheckpoint();
    }

    public Machine Machine { get; }
    public ulong Icount => Machine.Icount;
    public ulong StartIcount { get; }
    public CheckpointCache Checkpoints { get; }
    /// <summary>Set once a write from the debugger forked the replay into a live run.</summary>
    public bool Forked { get; private set; }
    public ulong ForkIcount { get; private set; }
    /// <summary>Digest events checked so far, over every forward pass.</summary>
    public long DigestsVerified => _verifiedBefore + (_session?.Port.DigestsVerified ?? 0);
    private long _verifiedBefore;
    /// <summary>Messages for the user (fork, end of replay, divergence).</summary>
    public Action<string>? Notice { get; set; }
    /// <summary>The session's divergence, if the replay diverged.</summary>
    public Divergence? Divergence => _session?.Divergence;

    public IReadOnlyCollection<ulong> Breakpoints => _breakpoints;
    public IReadOnlyList<Watchpoint> Watchpoints => _watchpoints;
    public bool AddBreakpoint(ulong pc) => _breakpoints.Add(pc);
    public bool RemoveBreakpoint(ulong pc) => _breakpoints.Remove(pc);
    public void AddWatchpoint(Watchpoint w) => _watchpoints.Add(w);
    public bool RemoveWatchpoint(Watchpoint w) => _watchpoints.Remove(w);

    /// <summary>Asks a running continue (forward or reverse) to stop soon (any thread).</summary>
    public void Interrupt()
    {
        _interrupt = true;
        if (_busy) Machine.RequestStop(); // a request left pending would stop the next command at once
    }

    private volatile bool _busy;

    /// <summary>Runs one debugger command with interrupts enabled.</summary>
    private TargetStop Command(Func<TargetStop> body)
    {
        _interrupt = false;
        _busy = true;
        try { return body(); }
        finally { _busy = false; }
    }

    // ---- Forward ----

    public TargetStop StepForward() => Command(() =>
        Forked ? LiveRun(Icount + 1, armed: false, step: true) : Conclude(Forward(Icount + 1, armed: false), step: true));

    public TargetStop Continue() => Command(() =>
        Forked ? LiveRun(ulong.MaxValue, armed: true, step: false) : Conclude(Forward(ulong.MaxValue, armed: true), step: false));

    private TargetStop Conclude(ReplayStatus st, bool step)
    {
        switch (st)
        {
            case ReplayStatus.ReachedUntil:
                return AtStop(new TargetStop(StopKind.Step, Icount));
            case ReplayStatus.Stopped when _session!.LastMachineStop == StopReason.Debug && Machine.Debug.LastStop is { } hit:
                if (!hit.IsWatchpoint) { Settle(); return AtStop(new TargetStop(StopKind.Breakpoint, Icount)); }
                // gdb on riscv expects a watchpoint to stop before the accessing instruction; it steps over it itself.
                Seek(Icount - 1);
                return AtStop(new TargetStop(StopKind.Watchpoint, Icount, hit.Watch, hit.AccessAddress));
            case ReplayStatus.Stopped:
                Settle();
                return AtStop(new TargetStop(step ? StopKind.Step : StopKind.Interrupted, Icount));
            case ReplayStatus.Finished:
                Notice?.Invoke($"replay reached the end of the trace at icount {Icount}: faithful, {DigestsVerified} state digest checks passed over every forward pass" +
                               (Machine.ExitCode is { } code ? $", guest exit code {code}" : ""));
                return new TargetStop(StopKind.ReplayEnd, Icount);
            case ReplayStatus.TraceEnded:
                Notice?.Invoke($"the trace ends (cut short) at icount {Icount}");
                return new TargetStop(StopKind.ReplayEnd, Icount);
            default:
                string message = $"replay diverged: {_session?.Divergence}";
                Notice?.Invoke(message);
                return new TargetStop(StopKind.Diverged, Icount, Message: message);
        }
    }

    /// <summary>Takes the inputs due at the current icount, as a checkpoint of this run holds them.</summary>
    private void Settle()
    {
        if (_session != null && !Forked) _session.Run(Icount);
    }

    private TargetStop AtStop(TargetStop stop)
    {
        if (!Forked && Checkpoints.DistanceToNearest(Icount) >= StopCheckpointDistance) TakeCheckpoint();
        return stop;
    }

    /// <summary>Replays forward to <paramref name="until"/>, taking checkpoints at the adaptive interval.</summary>
    private ReplayStatus Forward(ulong until, bool armed)
    {
        Arm(armed);
        try
        {
            while (true)
            {
                ulong last = Checkpoints.AtOrBefore(Icount)?.Icount ?? Icount;
                ulong next = Math.Max(last + _interval, Icount + 1);
                // The end of the recording is where sessions usually turn back: keep one checkpoint close before it.
                ulong nearEnd = _file.FinalIcount > MinInterval ? _file.FinalIcount - MinInterval : 0;
                if (Icount < nearEnd && nearEnd < next) next = nearEnd;
                ulong segment = Math.Min(until, next);
                var st = _session!.Run(segment);
                if (st != ReplayStatus.ReachedUntil) return st;
                if (_interrupt) return ReplayStatus.Stopped;
                if (Icount == next) TakeCheckpoint();
                if (Icount >= until) return st;
            }
        }
        finally { Arm(false); }
    }

    /// <summary>`monitor checkpoint`: a checkpoint where the user stands.</summary>
    public DebugCheckpoint TakeUserCheckpoint()
    {
        Settle();
        return Checkpoints.Add(Machine, Icount);
    }

    private void TakeCheckpoint()
    {
        var clock = Stopwatch.StartNew();
        var c = Checkpoints.Add(Machine, Icount);
        // Keep checkpointing to a few percent of replay time: at ~200 MIPS one millisecond is 200k instructions.
        ulong cost = (ulong)(clock.Elapsed.TotalMilliseconds * 200_000 * 30);
        _interval = Math.Clamp(cost, MinInterval, MaxInterval);
        _ = c;
    }

    private void Arm(bool armed)
    {
        var hooks = Machine.Debug;
        if (hooks.Breakpoints.Count > 0 || hooks.Watchpoints.Count > 0) hooks.ClearAll();
        if (!armed) return;
        foreach (var pc in _breakpoints) hooks.AddBreakpoint(pc);
        foreach (var w in _watchpoints) hooks.AddWatchpoint(w);
    }

    // ---- Backward ----

    /// <summary>Goes to exactly <paramref name="target"/> on the recorded run (restoring a checkpoint when it lies behind).</summary>
    public void Seek(ulong target)
    {
        if (Forked || target < Icount || _session == null)
        {
            var c = Checkpoints.AtOrBefore(target) ?? throw new InvalidOperationException($"no checkpoint at or before icount {target}");
            Restore(c);
            // Going back far: leave a checkpoint shortly before the target, so the next step back is quick.
            if (target - Icount > 2 * MinInterval)
            {
                var st0 = Forward(target - MinInterval, armed: false);
                if (st0 == ReplayStatus.ReachedUntil) TakeCheckpoint();
            }
        }
        var st = Forward(target, armed: false);
        if (st != ReplayStatus.ReachedUntil && Icount != target)
            throw new InvalidOperationException($"could not replay to icount {target}: {st} at {Icount} {_session?.Divergence}");
    }

    private void Restore(DebugCheckpoint c)
    {
        if (Forked)
        {
            Notice?.Invoke($"leaving the live fork (made at icount {ForkIcount}); back on the recorded run at icount {c.Icount}");
            Forked = false;
        }
        _verifiedBefore = DigestsVerified;
        Machine.Debug.ClearAll();
        Checkpoints.Restore(Machine, c);
        _session = ReplaySession.Resume(_file, _options, Machine);
    }

    public TargetStop ReverseStep() => Command(ReverseStepCore);

    private TargetStop ReverseStepCore()
    {
        ulong here = Icount;
        if (here <= StartIcount) return new TargetStop(StopKind.ReplayBegin, here);
        Seek(here - 1);
        return AtStop(new TargetStop(StopKind.Step, Icount));
    }

    private readonly record struct Hit(ulong Icount, bool IsWatch, Watchpoint Watch, ulong Address);

    /// <summary>
    /// Goes back to the last breakpoint or watchpoint hit before the current position: each
    /// checkpoint interval, newest first, is replayed with the hooks armed, keeping its last hit.
    /// A breakpoint hit is reported before its instruction; a watchpoint hit after the access
    /// (gdb then steps back over the accessing instruction itself).
    /// </summary>
    public TargetStop ReverseContinue() => Command(ReverseContinueCore);

    private TargetStop ReverseContinueCore()
    {
        ulong here = Icount;
        ulong hi = here;
        while (hi > StartIcount)
        {
            if (_interrupt) break;
            var c = Checkpoints.AtOrBefore(hi - 1)!;
            Hit? last = ScanInterval(c, hi, here);
            if (last is { } h)
            {
                Seek(h.Icount);
                return AtStop(h.IsWatch ? new TargetStop(StopKind.Watchpoint, Icount, h.Watch, h.Address) : new TargetStop(StopKind.Breakpoint, Icount));
            }
            hi = c.Icount;
        }
        if (_interrupt) { Seek(hi); return AtStop(new TargetStop(StopKind.Interrupted, Icount)); }
        Seek(StartIcount);
        return new TargetStop(StopKind.ReplayBegin, Icount);
    }

    private Hit? ScanInterval(DebugCheckpoint c, ulong hi, ulong here)
    {
        Restore(c);
        Hit? last = null;
        if (c.Icount < here && _breakpoints.Contains(Machine.Pc)) last = new Hit(c.Icount, false, default, 0);
        Arm(true);
        try
        {
            while (true)
            {
                var st = _session!.Run(hi);
                if (st == ReplayStatus.Stopped && _session.LastMachineStop == StopReason.Debug && Machine.Debug.LastStop is { } stop)
                {
                    if (stop.IsWatchpoint) { if (Icount <= here) last = new Hit(Icount, true, stop.Watch, stop.AccessAddress); }
                    else if (Icount < here) last = new Hit(Icount, false, default, 0);
                    continue;
                }
                if (st == ReplayStatus.Stopped && _interrupt) return last;
                if (st is ReplayStatus.Diverged) throw new InvalidOperationException($"replay diverged while going back: {_session.Divergence}");
                return last;
            }
        }
        finally { Arm(false); }
    }

    // ---- Writes: fork into a live run ----

    /// <summary>Called before any write from the debugger: the replay becomes a live run from here.</summary>
    public void Fork()
    {
        if (Forked) return;
        Settle();
        Forked = true;
        ForkIcount = Icount;
        _verifiedBefore = DigestsVerified;
        _session = null;
        Machine.HostPort = new ForkedHostPort(Machine, _options.Output);
        Notice?.Invoke($"replay forked into a live session at icount {Icount}: the debugger wrote to the machine, so it no longer follows the trace (reverse execution returns to the recording)");
    }

    private TargetStop LiveRun(ulong until, bool armed, bool step)
    {
        Arm(armed);
        StopReason reason;
        try { reason = Machine.Run(until); }
        finally { Arm(false); }
        switch (reason)
        {
            case StopReason.Debug when Machine.Debug.LastStop is { } hit:
                if (!hit.IsWatchpoint) return new TargetStop(StopKind.Breakpoint, Icount);
                // A live run cannot go back: report after the access (gdb shows the new value one instruction late).
                return new TargetStop(StopKind.Watchpoint, Icount, hit.Watch, hit.AccessAddress);
            case StopReason.Exited:
                return new TargetStop(StopKind.Exited, Icount);
            case StopReason.Idle:
                Notice?.Invoke($"the live fork idles for good at icount {Icount}");
                return new TargetStop(StopKind.Interrupted, Icount);
            default:
                return new TargetStop(step ? StopKind.Step : StopKind.Interrupted, Icount);
        }
    }

    public void Dispose()
    {
        if (_session != _root) _session = null;
        Checkpoints.Dispose();
        _root.Dispose();
    }
}
