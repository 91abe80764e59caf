using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The one decision point of a migration: GO (commit, on the matching ACK) or abort (a cancel, a
/// timeout, a failure, a silent peer) is taken exactly once, by whichever comes first; the loser
/// learns it lost and follows the winner. So an ACK timeout and a commit can never both happen.
/// Committing is a state of its own while the commit step (<see cref="ISwitchoverCommit"/>) runs:
/// an abort that comes then waits for its verdict, and a refused commit ends as abort.
/// </summary>
internal sealed class SwitchoverDecision
{
    private const int Committing = -1;
    private int _value = (int)Decision.Pending;
    private readonly ManualResetEventSlim _settled = new();

    /// <summary>Pending while undecided or committing; then GO or abort.</summary>
    public Decision Value => Volatile.Read(ref _value) is var v && v == Committing ? Decision.Pending : (Decision)v;

    /// <summary>True when abort is now the outcome (taken here, or already); false when GO won.</summary>
    public bool TakeAbort()
    {
        int was = Interlocked.CompareExchange(ref _value, (int)Decision.Abort, (int)Decision.Pending);
        if (was == (int)Decision.Pending) { _settled.Set(); return true; }
        if (was == Committing) _settled.Wait(); // the commit step decides; follow it
        return Volatile.Read(ref _value) == (int)Decision.Abort;
    }

    /// <summary>
    /// Runs <paramref name="commit"/> unless abort was taken first. While it runs nothing can abort;
    /// it returns false (refused) to end as abort. True when GO is the outcome.
    /// </summary>
    public bool TryCommit(Func<bool> commit)
    {
        int was = Interlocked.CompareExchange(ref _value, Committing, (int)Decision.Pending);
        if (was == (int)Decision.Go) return true;
        if (was != (int)Decision.Pending) return false;
        bool ok = false;
        try { ok = commit(); }
        finally
        {
            Volatile.Write(ref _value, ok ? (int)Decision.Go : (int)Decision.Abort);
            _settled.Set();
        }
        return ok;
    }
}
