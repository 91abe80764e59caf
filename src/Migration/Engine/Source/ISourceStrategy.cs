using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// One way of bringing a guest to its switchover, source side: stop-and-copy, log shipping,
/// pre-copy, post-copy, or auto (a chain of them). Each owns its own state; all end in the same
/// <see cref="SourceSwitchover"/>, which alone pauses, commits, releases and rolls back.
/// </summary>
internal interface ISourceStrategy
{
    /// <summary>Runs until the final state went (the guest paused); the destination must ACK the point returned.</summary>
    SwitchoverPoint Run(CancellationToken token);

    void FillReport(MigrationReport report);
    void FillProgress(MigrationProgress progress);

    /// <summary>Drops what the strategy still holds (log recorder, checkpoint C0); the guest stands still.</summary>
    void Release();
}

/// <summary>Where the switchover stands: the icount and digest the destination must ACK, and the post-copy still to serve after GO (if any).</summary>
internal sealed record SwitchoverPoint(ulong Icount, ulong Digest, PostcopySource? Postcopy = null);
