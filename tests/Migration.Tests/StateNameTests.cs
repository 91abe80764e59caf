using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Tests;

/// <summary>Status shows every state by a name of its own; code compares the enums.</summary>
public sealed class StateNameTests
{
    [Fact]
    public void Every_destination_state_has_its_own_name()
    {
        var states = Enum.GetValues<DestinationState>().Where(s => s != DestinationState.None).ToList();
        var names = states.Select(DestinationStates.Name).ToList();
        Assert.Equal(names.Count, names.Distinct().Count());
        Assert.DoesNotContain(names, n => n.StartsWith("state "));
        Assert.Equal("awaiting-go", DestinationStates.Name(DestinationState.AwaitingGo));
    }

    [Fact]
    public void Every_guest_status_has_its_own_name_and_an_arriving_guest_shows_its_arrival()
    {
        var names = Enum.GetValues<GuestStatus>().Where(s => s != GuestStatus.Unknown).Select(s => GuestStatuses.Name(s)).ToList();
        Assert.Equal(names.Count, names.Distinct().Count());
        Assert.DoesNotContain("unknown", names);
        Assert.Equal("replaying", GuestStatuses.Name(GuestStatus.Arriving, DestinationState.Replaying));
        Assert.Equal("arriving", GuestStatuses.Name(GuestStatus.Arriving));
    }
}
