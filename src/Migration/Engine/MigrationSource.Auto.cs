using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The automatic strategy (the default): log shipping first; when the destination's replay falls
/// behind — the replay lag grows over a window although the throttle is at its cap, or the log
/// phase runs out of time — the source falls back to pre-copy. It retains the copy-on-write
/// snapshot C0 and a dirty client started at C0 for that: the destination drops its replay back
/// to C0 and the pages dirtied since C0 go as XBZRLE deltas against the C0 copies. When pre-copy
/// gives up too (no progress with the throttle at its cap, or the round cap), the pages still dirty
/// go post-copy instead of a long stop-and-copy (<see cref="PostcopyAfterPrecopy"/>).
/// </summary>
internal sealed partial class MigrationSource
{
    /// <summary>The window over which a growing lag means the replay cannot keep up.</summary>
    private const double FallbackWindowSeconds = 2.0;
    /// <summary>The log phase's throttle cap (the control loop raises it up to this).</summary>
    private double LogThrottleCap => Math.Min(0.95, MaxThrottle);
    /// <summary>Pre-copy's auto-converge cap (QEMU's max-cpu-throttle, default 99 %).</summary>
    private double PrecopyThrottleCap => Math.Min(0.99, MaxThrottle);
    private double MaxThrottle => _command.HasMaxThrottlePercent ? Math.Clamp(_command.MaxThrottlePercent / 100.0, 0, 0.99) : 0.99;

    private string? _fallbackReason;
    private readonly Queue<(double T, ulong Gap)> _lagWindow = new();

    /// <summary>At C0, with the guest paused: track the pages written from now on.</summary>
    private void StartFallbackTracking()
    {
        _sinceC0 = _guest.Machine.Memory.CreateDirtyClient("since-c0");
        _sinceC0.CollectAndClear(new List<int>()); // a new client starts all dirty
    }

    /// <summary>Called by the log-shipping control loop every step with the replay lag in seconds.</summary>
    private bool ShouldFallBack(double now, double lag, double limit, bool outOfTime)
    {
        if (Strategy != Strategy.Auto) return false;
        if (outOfTime)
        {
            _fallbackReason = $"log shipping did not converge in {MaxLogPhase.TotalSeconds:F0} s (replay lag {lag * 1000:F0} ms)";
            return true;
        }
        // Lag in instructions, not seconds: the replay's measured speed moves; the gap does not lie.
        ulong source = _guest.Machine.Icount, replay = (ulong)Interlocked.Read(ref _replayIcount);
        ulong gap = source > replay ? source - replay : 0;
        if (_throttle < LogThrottleCap - 1e-9) { _lagWindow.Clear(); return false; } // the throttle may still help
        _lagWindow.Enqueue((now, gap));
        while (_lagWindow.Count > 0 && now - _lagWindow.Peek().T > FallbackWindowSeconds) _lagWindow.Dequeue();
        if (lag <= limit) return false;
        var (t0, gap0) = _lagWindow.Peek();
        if (now - t0 < FallbackWindowSeconds * 0.9 || gap <= gap0) return false;
        _fallbackReason = $"replay falls behind: {gap0 / 1e6:F1} M instructions behind grew to {gap / 1e6:F1} M in {now - t0:F1} s with the guest throttled {_throttle:P0} (replay {_replayMips:F1} MIPS, predicted tail {lag * 1000:F0} ms)";
        return true;
    }

    private (ulong Icount, ulong Digest) FallBackToPrecopy(CancellationToken token)
    {
        _guest.Pause();
        _guest.Port.Throttle = 0;
        _throttle = 0;
        StopLogging();
        _recorder = null;
        while (_logFrames.TryDequeue(out _)) { }
        Interlocked.Exchange(ref _logQueuedBytes, 0);
        ulong cacheBytes = _command.XbzrleCacheBytes == 0 ? DefaultXbzrleCacheBytes : _command.XbzrleCacheBytes;
        _conn!.Send(new Envelope
        {
            PrecopyFallback = new PrecopyFallback { C0Icount = _c0Icount, Reason = _fallbackReason ?? "", XbzrleCacheBytes = cacheBytes },
        }, ByteCategory.Protocol, token);
        SwitchStrategy(Strategy.Precopy, _fallbackReason ?? "fallback");
        var c0 = _retainedC0;
        var since = _sinceC0;
        _sinceC0 = null;
        return Precopy(token, c0, since); // resumes the guest once it knows which pages to send
    }

    private ulong _c0Icount;

    /// <summary>Drops what the fallback would have needed (success without it, or a rollback).</summary>
    private void ReleaseFallbackState()
    {
        _sinceC0?.Release();
        _sinceC0 = null;
        _retainedC0?.Dispose();
        _retainedC0 = null;
    }
}
