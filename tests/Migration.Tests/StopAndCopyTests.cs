using System.Text.RegularExpressions;
using LiveMigration.Migration.Hosting;
using LiveMigration.Cli.Demo;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

public sealed class EndToEndTests(ITestOutputHelper output)
{
    /// <summary>"progress N" / "tick N" lines seen across both consoles must be consecutive: nothing lost, nothing repeated.</summary>
    internal static void AssertContinuous(string text, string prefix, int atLeast)
    {
        var numbers = Regex.Matches(text, $@"(?m)^{prefix} (\d+)").Select(m => long.Parse(m.Groups[1].Value)).ToList();
        Assert.True(numbers.Count >= atLeast, $"only {numbers.Count} '{prefix}' lines:\n{text}");
        for (int i = 1; i < numbers.Count; i++)
            Assert.True(numbers[i] == numbers[i - 1] + 1, $"'{prefix}' jumps from {numbers[i - 1]} to {numbers[i]}:\n{text}");
    }

    [Theory]
    [InlineData("stopcopy")]
    [InlineData("log")]
    [InlineData("postcopy")]
    public void Idle_guest_migrates_with_continuous_ticks(string strategy)
    {
        using var hosts = new Hosts(output);
        using var c = HostClient.Connect(hosts.A.Address);
        c.Start("idle", Guests.Elf("idle_forever"), 32 << 20, "idle_forever");
        using var console = new ConsoleClient(hosts.A.Address, "idle");
        console.WaitFor(t => t.Contains("tick 1\n"), 5000);
        var r = hosts.Migrate("idle", hosts.A, hosts.B, strategy);
        Assert.True(r.Success, r.Error);
        Assert.True(r.DigestVerified);
        Assert.Equal(1, hosts.RunningCount("idle"));
        Assert.Equal(hosts.B.Address, hosts.RunningOn("idle"));
        string before = console.Text;
        console.Follow();
        Assert.Equal(hosts.B.Address, console.CurrentHost);
        console.WaitFor(t => Regex.Matches(t, @"(?m)^tick \d+").Count >= 3, 5000);
        AssertContinuous(console.Text, "tick", 3);
    }

    [Theory]
    [InlineData("stopcopy")]
    [InlineData("log")]
    public void Compute_and_dirty_guests_migrate_and_keep_their_output(string strategy)
    {
        foreach (var guest in new[] { "compute_forever", "dirty_hotcold", "dirty_forever" })
        {
            using var hosts = new Hosts(output);
            using var c = HostClient.Connect(hosts.A.Address);
            c.Start("g", Guests.Elf(guest), 128 << 20, guest);
            using var console = new ConsoleClient(hosts.A.Address, "g");
            console.WaitFor(t => t.Contains("progress 2 "), 20000);
            var r = hosts.Migrate("g", hosts.A, hosts.B, strategy, downtimeMs: 50);
            Assert.True(r.Success, r.Error);
            Assert.True(r.DigestVerified);
            Assert.Equal(1, hosts.RunningCount("g"));
            string before = console.Text;
            int seen = Regex.Matches(before, @"(?m)^progress \d+").Count;
            console.Follow();
            console.WaitFor(t => Regex.Matches(t, @"(?m)^progress \d+").Count >= seen + 2, 20000);
            AssertContinuous(console.Text, "progress", seen + 2);
        }
    }

    [Theory]
    [InlineData("stopcopy")]
    [InlineData("log")]
    [InlineData("precopy")]
    [InlineData("auto")]
    [InlineData("postcopy")]
    public void Kv_client_loses_nothing_across_migration(string strategy)
    {
        using var hosts = new Hosts(output);
        using var c = HostClient.Connect(hosts.A.Address);
        c.Start("kv", Guests.Elf("kv"), 32 << 20, "kv");
        using var client = new KvClient(hosts.A.Address, "kv");
        client.WaitReady();
        using var stop = new CancellationTokenSource();
        var load = Task.Run(() => client.RunLoad(stop.Token));
        Thread.Sleep(300);
        var r = hosts.Migrate("kv", hosts.A, hosts.B, strategy);
        Thread.Sleep(300);
        stop.Cancel();
        load.Wait();
        Assert.True(r.Success, r.Error);
        Assert.True(r.DigestVerified);
        Assert.Equal(hosts.B.Address, hosts.RunningOn("kv"));
        Assert.True(client.Acknowledged.Count > 10, $"only {client.Acknowledged.Count} SETs acknowledged");
        var missing = client.VerifyAll();
        Assert.Empty(missing);
    }

    [Fact]
    public void Migrate_back_and_forth()
    {
        using var hosts = new Hosts(output);
        using var c = HostClient.Connect(hosts.A.Address);
        c.Start("kv", Guests.Elf("kv"), 16 << 20, "kv");
        using var client = new KvClient(hosts.A.Address, "kv");
        client.WaitReady();
        for (int i = 0; i < 4; i++)
        {
            var (from, to) = i % 2 == 0 ? (hosts.A, hosts.B) : (hosts.B, hosts.A);
            client.Set($"round{i}", $"v{i}");
            var r = hosts.Migrate("kv", from, to, i % 2 == 0 ? "stopcopy" : "log");
            Assert.True(r.Success, r.Error);
            Assert.Equal(1, hosts.RunningCount("kv"));
        }
        for (int i = 0; i < 4; i++) Assert.Equal($"v{i}", client.Get($"round{i}"));
    }
}
