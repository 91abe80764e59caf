using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The one decision point of a migration: GO (commit, on the matching ACK) or abort (a cancel, a
/// timeout, a failure, a silent peer) is taken exactly once, by whichever comes first; the loser
/// learns it lost and follows the winner. So an ACK timeout and a commit can never both happen.
/// GO goes through <see cref="TryCommit"/>: its commit hook (the ownership store's transaction in a
/// fleet, nothing pairwise) IS the decision, and an abort that arrives meanwhile waits for its outcome.
/// </summary>
internal sealed class SwitchoverDecision
{
    private const int Deciding = -1; // the commit hook runs: not a wire value, never visible outside
    private int _value = (int)Decision.Pending;
    private readonly object _gate = new();

    /// <summary>The outcome so far (Pending while the commit hook runs).</summary>
    public Decision Value => Volatile.Read(ref _value) is var v && v == Deciding ? Decision.Pending : (Decision)v;

    /// <summary>True when abort is now the outcome (taken here, or already); waits for a commit hook that runs.</summary>
    public bool TakeAbort()
    {
        if (Interlocked.CompareExchange(ref _value, (int)Decision.Abort, (int)Decision.Pending) is var was && was == (int)Decision.Pending) return true;
        return Settled() == Decision.Abort;
    }

    /// <summary>
    /// Takes GO if nothing was decided and <paramref name="commit"/> returns true; a false or a throw
    /// from it decides abort. True when GO is the outcome (taken here, or already).
    /// </summary>
    public bool TryCommit(Func<bool> commit)
    {
        int was = Interlocked.CompareExchange(ref _value, Deciding, (int)Decision.Pending);
        if (was != (int)Decision.Pending) return Settled() == Decision.Go;
        var outcome = Decision.Abort;
        try { if (commit()) outcome = Decision.Go; }
        finally
        {
            lock (_gate)
            {
                Volatile.Write(ref _value, (int)outcome);
                Monitor.PulseAll(_gate);
            }
        }
        return outcome == Decision.Go;
    }

    private Decision Settled()
    {
        lock (_gate)
            while (Volatile.Read(ref _value) == Deciding) Monitor.Wait(_gate);
        return (Decision)_value;
    }
}
