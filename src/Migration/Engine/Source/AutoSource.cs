using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The automatic strategy (the default), a chain of the others: log shipping first; when its
/// <see cref="LogFallbackRule"/> says the replay cannot keep up, pre-copy from C0 (the destination
/// drops its replay back to C0 and the pages dirtied since go as XBZRLE deltas against the C0
/// copies, unthrottled); when pre-copy gives up too (no progress between rounds, or the round
/// cap), the pages still dirty go post-copy instead of a long stop-and-copy.
/// </summary>
internal sealed class AutoSource(SourceContext ctx, SourceSwitchover switchover) : ISourceStrategy
{
    private readonly List<ISourceStrategy> _ran = [];

    public SwitchoverPoint Run(CancellationToken token)
    {
        var rule = new LogFallbackRule(ctx);
        ctx.StrategyLog.Switch(Strategy.Log, "auto starts with log shipping");
        var log = Ran(new LogShippingSource(ctx, switchover, rule));
        if (log.TryRun(token) is { } shipped) return shipped;

        string reason = rule.Reason ?? "fallback";
        var fromC0 = log.StopForFallback();
        ctx.Conn!.Send(new Envelope
        {
            PrecopyFallback = new PrecopyFallback { C0Icount = log.C0Icount, Reason = reason, XbzrleCacheBytes = PrecopySource.CacheBytes(ctx.Command) },
        }, ByteCategory.Protocol, token);
        ctx.StrategyLog.Switch(Strategy.Precopy, reason);
        // No auto-converge: a throttle is guest work lost, and post-copy takes what pre-copy cannot.
        var precopy = Ran(new PrecopySource(ctx, switchover, autoConverge: false, handOverWhenStuck: true, fromC0));
        if (precopy.TryRun(token) is { } copied) return copied;

        ctx.StrategyLog.Switch(Strategy.Postcopy, $"pre-copy does not converge either: {precopy.ConvergedBy}");
        return Ran(new PostcopySource(ctx, switchover)).AfterPrecopy(precopy.Leftover, precopy.Encoder!, token);
    }

    private T Ran<T>(T strategy) where T : ISourceStrategy
    {
        lock (_ran) _ran.Add(strategy);
        return strategy;
    }

    private ISourceStrategy[] Steps() { lock (_ran) return [.. _ran]; }

    public void FillReport(MigrationReport report)
    {
        foreach (var s in Steps()) s.FillReport(report);
    }

    public void FillProgress(MigrationProgress progress)
    {
        foreach (var s in Steps()) s.FillProgress(progress);
    }

    public void Release()
    {
        foreach (var s in Steps()) s.Release();
    }
}
