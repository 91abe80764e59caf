using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The one decision point of a migration: GO (commit, on the matching ACK) or abort (a cancel, a
/// timeout, a failure, a silent peer) is taken exactly once, by whichever comes first; the loser
/// learns it lost and follows the winner. So an ACK timeout and a commit can never both happen.
/// </summary>
internal sealed class SwitchoverDecision
{
    private int _value = (int)Decision.Pending;

    public Decision Value => (Decision)Volatile.Read(ref _value);

    /// <summary>True when <paramref name="decision"/> is now the outcome (taken here, or already).</summary>
    public bool Take(Decision decision) =>
        Interlocked.CompareExchange(ref _value, (int)decision, (int)Decision.Pending) is var was && (was == (int)Decision.Pending || was == (int)decision);
}
