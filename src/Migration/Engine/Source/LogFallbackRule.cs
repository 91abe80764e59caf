using LiveMigration.Guest.Memory;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Auto's rule for leaving log shipping, asked by log shipping's control loop every step:
/// <list type="bullet">
/// <item>early, once the replay's speed is known: catching the replay up would cost the guest more
/// time than moving the pages it wrote since C0 again, and those take at least 0.1 s (a CPU-bound guest that dirties memory fast:
/// every instruction the replay is behind must be held back at the source, while pre-copy and
/// post-copy move the pages and let the guest run);</item>
/// <item>the replay falls behind: the gap in instructions grows over <see cref="WindowSeconds"/>
/// although the throttle is at its cap;</item>
/// <item>the log phase runs out of time.</item>
/// </list>
/// </summary>
internal sealed class LogFallbackRule(SourceContext ctx)
{
    /// <summary>The window over which a growing lag means the replay cannot keep up.</summary>
    public const double WindowSeconds = 2.0;
    /// <summary>How long the replay runs before its speed is trusted for the early decision.</summary>
    private const double MeasureSeconds = 0.15;
    /// <summary>The catch-up the log phase allows itself before it throttles harder (its control loop's pace).</summary>
    private const double CatchUpSeconds = 2.0;
    /// <summary>Guest time lost below which log shipping stays, whatever the pages would cost (2 % of a 5 s window).</summary>
    private const double NegligibleLossSeconds = 0.1;
    /// <summary>How much more a catch-up must cost than moving the pages before the pages move instead.</summary>
    private const double TieMargin = 1.5;

    private readonly Queue<(double T, ulong Gap)> _window = new();
    private (double T, ulong Icount, double Throttled)? _first;
    private bool _predicted;

    /// <summary>Why it fell back (set when <see cref="ShouldFallBack"/> said yes).</summary>
    public string? Reason { get; private set; }

    /// <param name="lag">The replay lag in seconds at the replay's measured speed.</param>
    /// <param name="dirtySinceC0">Counts the pages written since C0 (asked once, for the early decision).</param>
    public bool ShouldFallBack(double now, double lag, double limit, bool outOfTime, double throttleCap, Func<int> dirtySinceC0)
    {
        if (outOfTime)
        {
            Reason = $"log shipping did not converge in {LogShippingSource.MaxLogPhase.TotalSeconds:F0} s (replay lag {lag * 1000:F0} ms)";
            return true;
        }
        // Lag in instructions, not seconds: the replay's measured speed moves; the gap does not lie.
        ulong source = ctx.Guest.Machine.Icount, replay = ctx.ReturnPath.ReplayIcount;
        ulong gap = source > replay ? source - replay : 0;
        if (!_predicted && lag > limit && CatchUpCostsMore(now, source, gap, throttleCap, dirtySinceC0)) return true;
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

    /// <summary>
    /// The early decision, made once: the guest's own speed S (instructions over unthrottled time), the
    /// replay's R and the gap G give the guest time a catch-up costs at the least throttle θ that closes
    /// the gap within <see cref="CatchUpSeconds"/> (θ·G / (R − S(1−θ))); the pages written since C0 at the
    /// link rate bound what pre-copy and post-copy cost it (the guest runs while pre-copy rounds go and
    /// waits for pages only in a post-copy tail).
    /// </summary>
    private bool CatchUpCostsMore(double now, ulong source, ulong gap, double cap, Func<int> dirtySinceC0)
    {
        double throttled = ctx.Throttle.HeldBack.TotalSeconds;
        if (_first is not { } first) { _first = (now, source, throttled); return false; }
        double replayMips = ctx.ReturnPath.ReplayMips;
        if (now - first.T < MeasureSeconds || replayMips <= 0) return false;
        _predicted = true;
        double ran = Math.Max(now - first.T - (throttled - first.Throttled), 1e-3);
        double s = (source - first.Icount) / ran, r = replayMips * 1e6;
        double theta = s <= 0 ? 0 : Math.Clamp(1 - (r - gap / CatchUpSeconds) / s, 0, cap);
        double closing = r - s * (1 - theta);
        int pages = dirtySinceC0();
        double rate = ctx.Conn!.Limiter?.Rate ?? 1e9;
        double pagesSeconds = pages * (double)GuestMemory.PageSize / rate;
        double catchUpLoss = closing <= 0 ? double.PositiveInfinity : theta * gap / closing;
        ctx.Log($"log shipping: catching up {gap / 1e6:F1} M instructions (guest {s / 1e6:F0} MIPS, replay {replayMips:F0}) costs the guest ~{catchUpLoss * 1000:F0} ms at throttle {theta:P0}; its {pages} pages written since C0 take {pagesSeconds * 1000:F0} ms to move");
        // With few pages written (an I/O-bound guest, kv) the replay's measured speed is paced by the log's
        // arrival, not by its own compute: a slow replay there is the window rule's to find.
        bool pagesMatter = pagesSeconds >= NegligibleLossSeconds;
        // Near a tie log shipping stays: both cost the guest about the same (measured on dirty_hotcold: 0.54 s
        // throttled vs 0.49-0.56 s held back through pre-copy and post-copy), and the log moves a fifth of the bytes.
        bool clearlyDearer = catchUpLoss > NegligibleLossSeconds && catchUpLoss > TieMargin * pagesSeconds;
        if (!pagesMatter || !clearlyDearer) return false;
        Reason = closing <= 0
            ? $"replay falls behind: guest {s / 1e6:F0} MIPS, replay {replayMips:F0} MIPS, the gap cannot close even throttled {cap:P0}"
            : $"catching the replay up would hold the guest back ~{catchUpLoss * 1000:F0} ms (throttle {theta:P0}); the {pages} pages written since C0 move in {pagesSeconds * 1000:F0} ms";
        return true;
    }
}
