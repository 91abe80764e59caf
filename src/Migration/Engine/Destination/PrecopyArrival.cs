using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Destination side of pre-copy, chosen or after auto's fallback: pages arrive as
/// <see cref="DeltaPages"/> — whole, or XBZRLE deltas applied to this side's current copy of the
/// page, which is always the copy the source last sent (its page cache holds the same bytes), or
/// after a fallback the C0 copy (<see cref="PrecopyPageDecoder"/>). The final state's device state
/// is applied as sent and the whole digest checked.
/// </summary>
internal sealed class PrecopyArrival(DestinationContext ctx) : IArrivalStrategy
{
    private readonly PrecopyPageDecoder _decoder = new();

    /// <summary>Called under the destination's lock (a discard frees the RAM).</summary>
    public void OnDeltaPages(DeltaPages batch)
    {
        var memory = ctx.Machine!.Memory;
        _decoder.Apply(memory, batch);
        memory.RefreshRamDigest(); // hash as pages arrive, not all at the verification in the downtime
    }

    public string? ReachFinal(FinalState final, out ulong digest) => FullDigest.RestoreAndCheck(ctx.Machine!, final, out digest);
    public void AfterAck(FinalState final, ulong digest) => FullDigest.LogVerified(ctx, final, digest);
    public void BeforeResume() { }
    public bool ServesAfterGo => false;
    public void Stop() { }
}
