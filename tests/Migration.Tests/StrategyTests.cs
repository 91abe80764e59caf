using System.Text.RegularExpressions;
using LiveMigration.Cli.Demo;
using LiveMigration.Migration.Hosting;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

/// <summary>Pre-copy and the automatic strategy on every guest, and the auto strategy's fallback.</summary>
public sealed class StrategyTests(ITestOutputHelper output)
{
    private void Log(string s)
    {
        try { output.WriteLine(s); } catch (InvalidOperationException) { }
    }

    /// <summary>A source, and a destination that replays at most 2 MIPS (slower than any guest runs).</summary>
    private (GuestHost A, GuestHost B) SlowReplayHosts() =>
        (new GuestHost(new HostOptions { Log = Log }), new GuestHost(new HostOptions { Log = Log, ReplayMipsCap = 2 }));


    [Theory]
    [InlineData("precopy", "idle_forever")]
    [InlineData("precopy", "compute_forever")]
    [InlineData("precopy", "dirty_hotcold")]
    [InlineData("precopy", "dirty_hotcold_sv39")] // S-mode stores through compiled code's superpage region
    [InlineData("auto", "idle_forever")]
    [InlineData("auto", "compute_forever")]
    [InlineData("auto", "dirty_hotcold")]
    public void Running_guests_migrate_and_keep_their_output(string strategy, string guest)
    {
        using var hosts = new Hosts(output);
        using var c = HostClient.Connect(hosts.A.Address);
        c.Start("g", Guests.Elf(guest), 128 << 20, guest);
        using var console = new ConsoleClient(hosts.A.Address, "g");
        string prefix = guest == "idle_forever" ? "tick" : "progress";
        console.WaitFor(t => Regex.Matches(t, $@"(?m)^{prefix} \d+").Count >= 2, 20000);
        var r = hosts.Migrate("g", hosts.A, hosts.B, strategy, downtimeMs: 50);
        Assert.True(r.Success, r.Error);
        Assert.True(r.DigestVerified);
        Assert.Equal(1, hosts.RunningCount("g"));
        // Auto's fallback snapshot C0 must not outlive the migration on the destination.
        Assert.Equal(0, hosts.B.FindInstance("g")!.Machine.Memory.SnapshotCount);
        console.AssertContinuesAfterMove(prefix, 2);
        if (strategy == "precopy")
        {
            Assert.True(r.PrecopyRounds >= 2, $"{r.PrecopyRounds} rounds");
            // The guests report their unused RAM to the balloon: pre-copy skips it (a marker, no page).
            Assert.True(r.FreePages > 0, "no balloon-free page was skipped");
            Assert.False(string.IsNullOrEmpty(r.ConvergedBy));
        }
    }

    /// <summary>A small cache forces evictions (cache misses go whole), under a bandwidth cap; the result still verifies.</summary>
    [Fact]
    public void Precopy_with_a_small_cache_and_a_bandwidth_cap_verifies()
    {
        using var hosts = new Hosts(output);
        using var c = HostClient.Connect(hosts.A.Address);
        c.Start("g", Guests.Elf("dirty_hotcold"), 128 << 20, "dirty_hotcold");
        using var console = new ConsoleClient(hosts.A.Address, "g");
        console.WaitFor(t => t.Contains("progress 1 "), 20000);
        using var hc = HostClient.Connect(hosts.A.Address);
        var r = hc.Migrate(new Protocol.MigrateCommand
        {
            Name = "g", Target = hosts.B.Address, Strategy = Protocol.Strategy.Precopy, BandwidthBytesPerSecond = 200_000_000,
            DowntimeLimitMs = 30, XbzrleCacheBytes = 256 << 10, AutoConverge = true,
        });
        Log($"{r.Error} rounds={r.PrecopyRounds} xbzrle={r.XbzrlePages} full={r.FullPages} unchanged={r.UnchangedPages} by={r.ConvergedBy}");
        Assert.True(r.Success, r.Error);
        Assert.True(r.DigestVerified);
        Assert.True(r.FullPages > 64, "a 256 KiB cache must miss");
    }

    /// <summary>
    /// The destination replays at most 2 MIPS, far slower than the guest runs even at the throttle's cap: the
    /// auto strategy must notice the growing lag, fall back to pre-copy (destination back at C0, digest-checked),
    /// and still converge to a verified digest.
    /// </summary>
    [Fact]
    public void Auto_falls_back_to_precopy_when_replay_is_too_slow()
    {
        var (a, b) = SlowReplayHosts();
        try
        {
            using var console = ConsoleClient.StartGuest(a, "compute_forever", 32 << 20);
            using var hc = HostClient.Connect(a.Address);
            var r = hc.Migrate(new Protocol.MigrateCommand { Name = "g", Target = b.Address, Strategy = Protocol.Strategy.Auto, DowntimeLimitMs = 20 });
            foreach (var s in r.Switches) Log($"switch at {s.T:F2} s: {s.From} -> {s.To}: {s.Reason}");
            Assert.True(r.Success, r.Error);
            Assert.True(r.DigestVerified);
            Assert.Equal(2, r.Switches.Count);
            Assert.Equal(Protocol.Strategy.Log, r.Switches[0].To);
            Assert.Equal(Protocol.Strategy.Precopy, r.Switches[1].To);
            Assert.Contains("replay falls behind", r.Switches[1].Reason);
            Assert.True(r.PrecopyRounds >= 1);
            Assert.Equal(r.MaxThrottle > 0, r.ThrottledSeconds > 0); // time held back is reported when the throttle acted
            Assert.True(r.ThrottledSeconds < r.TotalSeconds);
            Assert.NotNull(b.FindInstance("g"));
            Assert.Null(a.FindInstance("g"));
            console.AssertContinuesAfterMove("progress", 1);
        }
        finally
        {
            a.Dispose();
            b.Dispose();
        }
    }

    /// <summary>
    /// Issue 5's last resort: replay too slow (log shipping falls back to pre-copy), no throttle allowed
    /// (--max-throttle 0) and a link slower than the guest dirties its 64 MiB: pre-copy makes no
    /// progress either, so the pages still dirty go post-copy. The pages already sent are verified by
    /// the RAM digest over them before the ACK, the post-copy ones by their hashes.
    /// </summary>
    [Fact]
    public void Auto_goes_post_copy_when_pre_copy_does_not_converge_either()
    {
        var (a, b) = SlowReplayHosts();
        try
        {
            using var console = ConsoleClient.StartGuest(a, "dirty_forever");
            using var hc = HostClient.Connect(a.Address);
            var r = hc.Migrate(new Protocol.MigrateCommand
            {
                Name = "g", Target = b.Address, Strategy = Protocol.Strategy.Auto, DowntimeLimitMs = 10, BandwidthBytesPerSecond = 100_000_000, MaxThrottlePercent = 0,
            });
            foreach (var s in r.Switches) Log($"switch at {s.T:F2} s: {s.From} -> {s.To}: {s.Reason}");
            Log($"rounds={r.PrecopyRounds} postcopy pages={r.PostcopyPages} requested={r.PostcopyRequestedPages} verified={r.PostcopyVerifiedPages} downtime={r.DowntimeSeconds * 1000:F1} ms");
            Assert.True(r.Success, r.Error);
            Assert.True(r.DigestVerified);
            Assert.Equal([Protocol.Strategy.Log, Protocol.Strategy.Precopy, Protocol.Strategy.Postcopy], r.Switches.Select(s => s.To));
            Assert.Contains("pre-copy does not converge", r.Switches[2].Reason);
            Assert.True(r.PostcopyPages > 64, "the hot pages go post-copy");
            Assert.Equal(r.PostcopyPages, r.PostcopyVerifiedPages);
            Assert.Equal(0.0, r.MaxThrottle);
            var dest = b.FindInstance("g")!;
            Assert.Equal(0, dest.Machine.Memory.AbsentPageCount);
            Assert.Null(a.FindInstance("g"));
            console.AssertContinuesAfterMove("progress", 2);
        }
        finally
        {
            a.Dispose();
            b.Dispose();
        }
    }
}
