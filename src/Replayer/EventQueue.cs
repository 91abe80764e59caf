using LiveMigration.Trace;

namespace LiveMigration.Replayer;

/// <summary>
/// The events a replay has received, in order, decoded one at a time from their chunks. Frames are
/// pushed (<see cref="Add"/>, a migration destination) or pulled on demand from a file.
/// <see cref="Horizon"/> is how far the machine may run with no event pending: every frame promises
/// that no later event has an icount below its end icount.
/// </summary>
internal sealed class EventQueue(Func<TraceFrame?>? pull = null)
{
    private readonly Queue<TraceFrame> _frames = new();
    private EventChunkReader _current;
    private bool _hasCurrent;
    private TraceEvent _peeked;
    private bool _hasPeeked;
    private bool _pullDone = pull == null;

    public ulong Horizon { get; private set; }
    /// <summary>No more frames will come (pull source exhausted, or the sender completed).</summary>
    public bool InputComplete { get; private set; }
    public bool EndFrameSeen { get; private set; }

    public void Add(TraceFrame frame)
    {
        if (InputComplete) throw new InvalidOperationException("frames added after the input completed");
        _frames.Enqueue(frame);
        Horizon = Math.Max(Horizon, frame.EndIcount);
    }

    public void Complete() => InputComplete = true;

    /// <summary>Events below this icount are dropped (a replay resumed from a checkpoint taken between chunk boundaries).</summary>
    public ulong SkipBefore { get; set; }

    public bool TryPeek(out TraceEvent e)
    {
        if (_hasPeeked) { e = _peeked; return true; }
        while (true)
        {
            if (_hasCurrent && _current.TryRead(out e))
            {
                if (e.Icount < SkipBefore) continue;
                _peeked = e;
                _hasPeeked = true;
                return true;
            }
            _hasCurrent = false;
            if (!NextFrame(out var frame)) { e = default; return false; }
            Horizon = Math.Max(Horizon, frame.EndIcount);
            switch (frame.Kind)
            {
                case FrameKind.Events:
                    _current = frame.Events();
                    _hasCurrent = true;
                    break;
                case FrameKind.End:
                    EndFrameSeen = true;
                    break;
            }
        }
    }

    private bool NextFrame(out TraceFrame frame)
    {
        if (_frames.TryDequeue(out frame!)) return true;
        if (!_pullDone)
        {
            var f = pull!();
            if (f != null) { frame = f; return true; }
            _pullDone = true;
            InputComplete = true;
        }
        return false;
    }

    public void Advance() => _hasPeeked = false;

    /// <summary>Pulls one more frame ahead (raising the horizon) when the source can; false when it cannot.</summary>
    public bool TryExtend()
    {
        if (_pullDone) return false;
        var f = pull!();
        if (f == null) { _pullDone = true; InputComplete = true; return false; }
        _frames.Enqueue(f);
        Horizon = Math.Max(Horizon, f.EndIcount);
        return true;
    }
}
