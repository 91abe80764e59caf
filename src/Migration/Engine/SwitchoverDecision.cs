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
    /// it returns false (refused) to end as abort. A second caller does not run it again: it waits for
    /// the first one's verdict. True when GO is the outcome.
    /// </summary>
    public bool TryCommit(Func<bool> commit) => TryCommit(commit, out _);

    /// <param name="ran">True when this call ran the step (the caller then does the commit's bookkeeping).</param>
    public bool TryCommit(Func<bool> commit, out bool ran)
    {
        ran = false;
        int was = Interlocked.CompareExchange(ref _value, Committing, (int)Decision.Pending);
        if (was == Committing) _settled.Wait(); // another thread runs the step: its verdict is ours
        if (was != (int)Decision.Pending) return Volatile.Read(ref _value) == (int)Decision.Go;
        bool ok = false;
        ran = true;
        try { ok = commit(); }
        finally
        {
            Volatile.Write(ref _value, ok ? (int)Decision.Go : (int)Decision.Abort);
            _settled.Set();
        }
        return ok;
    }
}
