using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>Log shipping (DESIGN.md "Migration", strategy 1).</summary>
internal sealed partial class MigrationSource
{
    private (ulong Icount, ulong Digest) LogShipping(CancellationToken token)
    {
        // Until the trace engine lands, log shipping runs as stop-and-copy.
        return StopAndCopy(token);
    }

    private void StopLogging()
    {
        _guest.Port.Log = null;
    }
}
