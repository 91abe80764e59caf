using LiveMigration.Guest.Memory;
using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

/// <summary>Rate-adaptive pre-copy (Clark et al., NSDI'05 §3).</summary>
public sealed class AdaptiveRateTests(ITestOutputHelper output)
{
    [Fact]
    public void Each_round_runs_at_the_last_dirty_rate_plus_the_increment_between_floor_and_cap()
    {
        var rate = new AdaptiveRate(floor: 10e6, increment: 5e6, cap: 100e6);
        Assert.Equal(10e6, rate.Rate);                    // round 1 at the floor
        rate.AfterRound(dirtyPages: 2441, seconds: 1);    // ~10 MB/s dirtied
        Assert.Equal(2441 * GuestMemory.PageSize + 5e6, rate.Rate, 1);
        rate.AfterRound(dirtyPages: 10, seconds: 1);      // nearly idle: back to the floor
        Assert.Equal(10e6, rate.Rate);
        rate.AfterRound(dirtyPages: 1_000_000, seconds: 1); // more than the link: at the cap
        Assert.Equal(100e6, rate.Rate);
        Assert.Equal(AdaptiveRate.DefaultIncrement, new AdaptiveRate(1e6, 0, 0).Increment);
        Assert.True(double.IsPositiveInfinity(new AdaptiveRate(1e6, 0, 0).Cap)); // no --bandwidth: no cap
    }

    [Fact]
    public void An_adaptive_pre_copy_starts_at_the_floor_adapts_and_ends_at_the_cap()
    {
        using var hosts = new Hosts(output);
        using var console = ConsoleClient.StartGuest(hosts.A, "dirty_hotcold");
        using var c = HostClient.Connect(hosts.A.Address);
        const ulong Cap = 125_000_000, Floor = 20_000_000;
        var r = c.Migrate(new MigrateCommand
        {
            Name = "g", Target = hosts.B.Address, Strategy = Strategy.Precopy, BandwidthBytesPerSecond = Cap, DowntimeLimitMs = 30,
            AdaptiveMinBytesPerSecond = Floor, AdaptiveIncrementBytesPerSecond = 6_250_000, AutoConverge = true,
        });
        output.WriteLine($"rounds {r.PrecopyRounds}, rates {string.Join(", ", r.RoundRateBytesPerSecond.Select(x => $"{x / 1e6:F1}"))} MB/s, {r.TotalSeconds:F2} s, {r.Error}");
        Assert.True(r.Success, r.Error);
        Assert.True(r.DigestVerified);
        Assert.Equal((double)Floor, r.RoundRateBytesPerSecond[0]);
        Assert.Equal((double)Cap, r.RoundRateBytesPerSecond[^1]); // the stop-and-copy goes at the cap
        Assert.All(r.RoundRateBytesPerSecond, x => Assert.InRange(x, Floor, Cap));
        Assert.Equal((int)r.PrecopyRounds, r.RoundRateBytesPerSecond.Count);
        Assert.Contains(r.Timeline, s => s.RateLimitBytesPerSecond == Floor);
        console.AssertContinuesAfterMove("progress");
    }
}
