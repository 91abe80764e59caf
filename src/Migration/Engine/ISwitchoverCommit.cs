using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>What a commit step decides about: one migration of one guest, paused at a verified state.</summary>
public sealed record SwitchoverRecord(string MigrationId, string Guest, string Source, string Destination, ulong Icount, ulong Digest)
{
    /// <summary>Console bytes the destination takes over with GO (what a GoQuery answer carries too).</summary>
    public byte[] ConsoleInput { get; init; } = [];
    public byte[] ConsoleBacklog { get; init; } = [];
    /// <summary>The ownership epoch the source held the guest under at set-up (what a fleet's commit moves; 0 pairwise).</summary>
    public long Epoch { get; init; }
    /// <summary>The destination's certificate name (null without TLS): only it may ask for this migration's GO and console bytes.</summary>
    public string? DestinationHost { get; init; }
}

/// <summary>What the commit step says just before the pause.</summary>
public enum PauseVerdict
{
    /// <summary>A commit can succeed: pause.</summary>
    Go,
    /// <summary>The store did not answer: the guest runs on and the source asks again.</summary>
    NotYet,
    /// <summary>A commit would be refused: the migration fails with the guest still running here.</summary>
    Doomed,
}

public readonly record struct PauseCheck(PauseVerdict Verdict, string? Why)
{
    public static readonly PauseCheck Go = new(PauseVerdict.Go, null);
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

    /// <summary>
    /// Just before the guest pauses: whether a commit can still succeed (the guest is never paused
    /// for a doomed switchover, nor while the store cannot say). A fleet reads its record here, which
    /// also leaves the path to the store warm for the commit moments later.
    /// </summary>
    PauseCheck BeforePause(SwitchoverRecord record) => PauseCheck.Go;

    /// <summary>
    /// Before a paused source rolls back (a commit may have been tried): makes sure no commit can
    /// still apply. Null when the guest is the source's again; otherwise why not (it is dropped there,
    /// and the destination is not told to discard: the owner may be the destination).
    /// </summary>
    string? Reclaim(SwitchoverRecord record) => null;

    /// <summary>After commit the source no longer runs the guest (released, or held unconfirmed); <paramref name="paused"/> is the state handed over.</summary>
    void HandedOver(SwitchoverRecord record, Guest.Machine paused) { }
}

/// <summary>ACK/GO between two hosts: the source's journal entry is the commit point (a destination that lost GO asks it).</summary>
public sealed class PairwiseCommit(GuestHost host) : ISwitchoverCommit
{
    public string? Commit(SwitchoverRecord record)
    {
        host.RecordOutcome(record.MigrationId, new Outcome(Decision.Go, record.ConsoleInput, record.ConsoleBacklog, record.DestinationHost)); // journaled before GO can reach anyone
        return null;
    }

    public void Abort(SwitchoverRecord record) => host.RecordOutcome(record.MigrationId, new Outcome(Decision.Abort, [], []));
}

/// <summary>
/// A fleet's commit point: the ownership transaction (owner source/epoch n → destination/n+1) IS
/// the decision; the journal entry of <see cref="PairwiseCommit"/> follows it, so a destination
/// that lost GO and asks (GoQuery) still gets the answer.
/// </summary>
public sealed class OwnershipCommit(GuestHost host) : ISwitchoverCommit
{
    private readonly PairwiseCommit _journal = new(host);

    public string? Commit(SwitchoverRecord record)
    {
        string? refused;
        try { refused = host.Ownership.CommitMove(record.Guest, record.Source, record.Destination, record.Epoch); }
        catch (Exception e) when (e is HostException or IOException or InvalidOperationException) { refused = e.Message; }
        return refused ?? _journal.Commit(record);
    }

    public void Abort(SwitchoverRecord record) => _journal.Abort(record);

    public PauseCheck BeforePause(SwitchoverRecord record)
    {
        long? epoch;
        try { epoch = host.Ownership.EpochIfOwner(record.Guest, record.Source); }
        catch (OwnershipUnsettledException e) { return new(PauseVerdict.NotYet, e.Message); }
        catch (HostException e) { return new(PauseVerdict.Doomed, e.Message); }
        return epoch == record.Epoch ? PauseCheck.Go : new(PauseVerdict.Doomed, $"the fleet record of '{record.Guest}' no longer names {record.Source} at epoch {record.Epoch}");
    }

    public string? Reclaim(SwitchoverRecord record) =>
        host.Ownership.Reclaim(record.Guest, record.Source, record.Epoch) == null ? $"the fleet record of '{record.Guest}' names another host" : null;

    public void HandedOver(SwitchoverRecord record, Guest.Machine paused) => host.Ownership.HandedOver(record.Guest, paused);
}
