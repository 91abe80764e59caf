using System.Diagnostics;
using LiveMigration.Guest;

namespace LiveMigration.Migration.Hosting;

/// <summary>
/// Who may run a guest, asked by the host and the migration engine at their decision points.
/// Without a store (<see cref="PairwiseOwnership"/>) the two hosts of a migration settle it with
/// ACK/GO as before. In a fleet (LiveMigration.Fleet, etcd) every guest has one record (owner,
/// epoch): the commit is one transaction on it, and each side acts only on what it read back.
/// </summary>
public interface IOwnership : IDisposable
{
    /// <summary>True when a store decides (a lost GO settles itself); false for pairwise ACK/GO.</summary>
    bool Coordinated { get; }

    /// <summary>Shared by every guest of the host: a guest stops itself when it expires (fencing).</summary>
    RunPermit Permit { get; }

    /// <summary>Null when this host takes guests, else why not (draining).</summary>
    string? RefuseNewGuests();

    /// <summary>A guest started here: records this host as its owner; throws <see cref="HostException"/> when another host owns the name. Returns the epoch.</summary>
    long Claim(string guest, ulong memoryBytes, string image);

    /// <summary>The epoch of <paramref name="guest"/>'s record when it names <paramref name="owner"/>; null otherwise. Throws <see cref="OwnershipUnsettledException"/> when the store did not answer.</summary>
    long? EpochIfOwner(string guest, string owner);

    /// <summary>
    /// The commit hook of the switchover, on the source after the destination's ACK: GO is taken
    /// only when this commits (a fleet: owner source/epoch → destination/epoch+1 in one transaction).
    /// Returns null when committed (also when an earlier attempt of ours had applied), else why not:
    /// refused, or unknown because the store did not answer in time. Then the source aborts, and its
    /// <see cref="Reclaim"/> settles the record before the guest may resume. Never throws.
    /// </summary>
    string? CommitMove(string guest, string source, string destination, long epoch);

    /// <summary>
    /// Before a source resumes a guest whose migration failed: makes sure no commit or takeover can
    /// still apply (bumps the epoch). Returns the new epoch, or null when the guest is no longer ours.
    /// Blocks while the store does not answer (the paused guest waits: guessing could run it twice).
    /// </summary>
    long? Reclaim(string guest, string owner, long epoch);

    /// <summary>
    /// Destination, after its ACK: completes with true once the record names <paramref name="destination"/>
    /// at epoch+1, with false once it names anyone else (or the source at a later epoch). Never
    /// completes without a store.
    /// </summary>
    Task<bool> AwaitCommitted(string guest, string source, string destination, long epoch, CancellationToken token);

    /// <summary>
    /// Destination whose source vanished after its ACK: takes the guest (epoch+1) only when the
    /// source's lease is gone, so the source can neither resume nor commit. True when it is ours now.
    /// </summary>
    bool TakeOver(string guest, string source, string destination, long epoch);

    /// <summary>
    /// The source committed a move and no longer runs the guest (released, or held unconfirmed);
    /// <paramref name="paused"/> is the state handed over (a fleet keeps it as the new epoch's checkpoint).
    /// </summary>
    void HandedOver(string guest, Machine paused);

    /// <summary>A guest was stopped by the operator: its record goes.</summary>
    void Forget(string guest, string owner);
}

/// <summary>
/// Until when the guests of a host may run (a monotonic <see cref="Stopwatch"/> timestamp). A fleet
/// host extends it on every lease keep-alive; when keep-alives stop, its guests stop themselves at
/// the next poll, before the lease can expire. Checked at the guest's poll (every 16 Ki instructions).
/// </summary>
public sealed class RunPermit
{
    private long _until = long.MaxValue;

    public long Until
    {
        get => Volatile.Read(ref _until);
        set => Volatile.Write(ref _until, value);
    }

    public bool Expired => Stopwatch.GetTimestamp() > Until;
}

/// <summary>No store: the source decides at ACK and tells the destination with GO (the embedded default).</summary>
public sealed class PairwiseOwnership : IOwnership
{
    public bool Coordinated => false;
    public RunPermit Permit { get; } = new();
    public string? RefuseNewGuests() => null;
    public long Claim(string guest, ulong memoryBytes, string image) => 0;
    public long? EpochIfOwner(string guest, string owner) => 0;
    public string? CommitMove(string guest, string source, string destination, long epoch) => null;
    public long? Reclaim(string guest, string owner, long epoch) => epoch;
    public Task<bool> AwaitCommitted(string guest, string source, string destination, long epoch, CancellationToken token) => new TaskCompletionSource<bool>().Task;
    public bool TakeOver(string guest, string source, string destination, long epoch) => false;
    public void HandedOver(string guest, Machine paused) { }
    public void Forget(string guest, string owner) { }
    public void Dispose() { }
}

/// <summary>The store did not answer in time: who owns the guest is unknown here, so it stays paused until a later read tells.</summary>
public sealed class OwnershipUnsettledException(string message) : Exception(message);

/// <summary>The guest's record names another host (or the store moved on): this host must not run it.</summary>
public sealed class OwnershipLostException(string message) : Engine.MigrationFailedException(message);
