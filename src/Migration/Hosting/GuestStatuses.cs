using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Hosting;

/// <summary>A guest's <see cref="GuestStatus"/> as status shows it (code compares the enum, people read this).</summary>
public static class GuestStatuses
{
    /// <param name="arrival">For an arriving guest: where its migration stands (shown instead of "arriving").</param>
    public static string Name(GuestStatus status, DestinationState arrival = DestinationState.None) => status switch
    {
        GuestStatus.Running => "running",
        GuestStatus.Pausing => "pausing",
        GuestStatus.Paused => "paused",
        GuestStatus.Idle => "idle",
        GuestStatus.Exited => "exited",
        GuestStatus.Crashed => "crashed",
        GuestStatus.Stopped => "stopped",
        GuestStatus.MigratingOut => "migrating-out",
        GuestStatus.Arriving => arrival == DestinationState.None ? "arriving" : DestinationStates.Name(arrival),
        GuestStatus.Moved => "moved",
        GuestStatus.Fencing => "fencing",
        GuestStatus.Fenced => "fenced",
        _ => "unknown",
    };
}
