using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>Destination side of log shipping: restore C0, replay the log as it arrives.</summary>
internal sealed partial class MigrationDestination
{
    private void OnCheckpointDone(CheckpointDone done) => throw new ProtocolException("log shipping is not available in this build");

    private void OnLog(LogChunk chunk) => throw new ProtocolException("log shipping is not available in this build");

    /// <summary>Replays the log up to the final icount (log shipping); nothing to do for stop-and-copy.</summary>
    private void CatchUp(FinalState final) { }

    private void StopReplay() { }
}
