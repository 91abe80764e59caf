using LiveMigration.Guest.Memory;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Rate-adaptive pre-copy (Clark et al., NSDI'05, §3): round 1 goes at the floor; each later round
/// at the rate the guest dirtied memory during the previous one plus a fixed increment, between the
/// floor and the cap (`--bandwidth`). A migration so takes only as much of the link as it needs and
/// raises the rate where the guest's writable working set demands it; the final stop-and-copy goes
/// at the cap. Off unless `--adaptive-bandwidth MIN[,INCREMENT]` is given.
/// </summary>
internal sealed class AdaptiveRate
{
    /// <summary>Clark et al. used 50 Mbit/s steps.</summary>
    public const double DefaultIncrement = 50e6 / 8;

    public AdaptiveRate(double floor, double increment, double cap)
    {
        Floor = floor;
        Increment = increment > 0 ? increment : DefaultIncrement;
        Cap = cap > 0 ? Math.Max(cap, floor) : double.PositiveInfinity;
        Rate = floor;
    }

    public double Floor { get; }
    public double Increment { get; }
    public double Cap { get; }
    /// <summary>The rate for the next round, bytes per second.</summary>
    public double Rate { get; private set; }

    /// <summary>Null when the command does not ask for it.</summary>
    public static AdaptiveRate? For(MigrateCommand command) =>
        command.AdaptiveMinBytesPerSecond == 0 ? null
            : new AdaptiveRate(command.AdaptiveMinBytesPerSecond, command.AdaptiveIncrementBytesPerSecond, command.BandwidthBytesPerSecond);

    /// <summary>After a round of <paramref name="seconds"/> during which the guest dirtied <paramref name="dirtyPages"/> pages.</summary>
    public void AfterRound(long dirtyPages, double seconds)
    {
        double dirtyRate = dirtyPages * (double)GuestMemory.PageSize / Math.Max(seconds, 1e-3);
        Rate = Math.Clamp(dirtyRate + Increment, Floor, Cap);
    }
}
