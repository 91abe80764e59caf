using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Auto's rule for leaving log shipping: the replay falls behind — the gap in instructions grows
/// over <see cref="WindowSeconds"/> although the throttle is at its cap — or the log phase runs out
/// of time. Asked by log shipping's control loop every step.
/// </summary>
internal sealed class LogFallbackRule(SourceContext ctx)
{
    /// <summary>The window over which a growing lag means the replay cannot keep up.</summary>
    public const double WindowSeconds = 2.0;

    private readonly Queue<(double T, ulong Gap)> _window = new();

    /// <summary>Why it fell back (set when <see cref="ShouldFallBack"/> said yes).</summary>
    public string? Reason { get; private set; }

    /// <param name="lag">The replay lag in seconds at the replay's measured speed.</param>
    public bool ShouldFallBack(double now, double lag, double limit, bool outOfTime, double throttleCap)
    {
        if (outOfTime)
        {
            Reason = $"log shipping did not converge in {LogShippingSource.MaxLogPhase.TotalSeconds:F0} s (replay lag {lag * 1000:F0} ms)";
            return true;
        }
        // Lag in instructions, not seconds: the replay's measured speed moves; the gap does not lie.
        ulong source = ctx.Guest.Machine.Icount, replay = ctx.ReturnPath.ReplayIcount;
        ulong gap = source > replay ? source - replay : 0;
        double throttle = ctx.Throttle.Value;
        if (throttle < throttleCap - 1e-9) { _window.Clear(); return false; } // the throttle may still help
        _window.Enqueue((now, gap));
        while (_window.Count > 0 && now - _window.Peek().T > WindowSeconds) _window.Dequeue();
        if (lag <= limit) return false;
        var (t0, gap0) = _window.Peek();
        if (now - t0 < WindowSeconds * 0.9 || gap <= gap0) return false;
        Reason = $"replay falls behind: {gap0 / 1e6:F1} M instructions behind grew to {gap / 1e6:F1} M in {now - t0:F1} s with the guest throttled {throttle:P0} (replay {ctx.ReturnPath.ReplayMips:F1} MIPS, predicted tail {lag * 1000:F0} ms)";
        return true;
    }
}
