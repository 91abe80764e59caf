using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>What a commit step decides about: one migration of one guest, paused at a verified state.</summary>
public sealed record SwitchoverRecord(string MigrationId, string Guest, string Source, string Destination, ulong Icount, ulong Digest)
{
    /// <summary>Console bytes the destination takes over with GO (what a GoQuery answer carries too).</summary>
    public byte[] ConsoleInput { get; init; } = [];
    public byte[] ConsoleBacklog { get; init; } = [];
}

/// <summary>
/// The commit point of a switchover: the one step that hands the guest to the destination. The
/// switchover calls <see cref="Commit"/> at most once per migration, with the guest paused and the
/// destination's ACK matching the final state, and nothing can abort while it runs
/// (<see cref="SwitchoverDecision"/>); a refusal rolls the migration back. Two hosts settle between
/// themselves (<see cref="PairwiseCommit"/>: the source's journaled GO); a fleet makes its
/// ownership transaction this step (and keeps the journal, which answers a destination that asks).
/// </summary>
public interface ISwitchoverCommit
{
    /// <returns>Null when the guest now belongs to the destination; otherwise why the commit was refused.</returns>
    string? Commit(SwitchoverRecord record);

    /// <summary>The migration ended without commit, or an operator reversed it: the guest stays (or is again) the source's.</summary>
    void Abort(SwitchoverRecord record);
}

/// <summary>ACK/GO between two hosts: the source's journal entry is the commit point (a destination that lost GO asks it).</summary>
public sealed class PairwiseCommit(GuestHost host) : ISwitchoverCommit
{
    public string? Commit(SwitchoverRecord record)
    {
        host.RecordOutcome(record.MigrationId, new Outcome(Decision.Go, record.ConsoleInput, record.ConsoleBacklog)); // journaled before GO can reach anyone
        return null;
    }

    public void Abort(SwitchoverRecord record) => host.RecordOutcome(record.MigrationId, new Outcome(Decision.Abort, [], []));
}
