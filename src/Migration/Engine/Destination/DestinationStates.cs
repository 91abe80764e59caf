using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>Names of <see cref="DestinationState"/> (the wire enum) as status shows them.</summary>
public static class DestinationStates
{
    /// <summary>As status shows it: "awaiting-go", "postcopy-stalled".</summary>
    public static string Name(DestinationState state) => state switch
    {
        DestinationState.Arriving => "arriving",
        DestinationState.Replaying => "replaying",
        DestinationState.Precopy => "precopy",
        DestinationState.Verifying => "verifying",
        DestinationState.AwaitingGo => "awaiting-go",
        DestinationState.Running => "running",
        DestinationState.Postcopy => "postcopy",
        DestinationState.PostcopyStalled => "postcopy-stalled",
        DestinationState.Discarded => "discarded",
        DestinationState.Abandoned => "abandoned",
        _ => $"state {(int)state}",
    };
}
