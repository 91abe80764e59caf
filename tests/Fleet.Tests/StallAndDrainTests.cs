using System.Text.Json;
using LiveMigration.Cli.Demo;
using LiveMigration.Migration.Hosting;
using Xunit.Abstractions;

namespace LiveMigration.Fleet.Tests;

/// <summary>A stalled host is fenced; a host is drained under load; the fleet views; real `lm host` processes.</summary>
public sealed class StallAndDrainTests(ITestOutputHelper output)
{
    [Fact]
    public void A_stalled_host_past_its_lease_is_fenced_and_does_not_resume_a_guest_that_was_recovered_elsewhere()
    {
        using var etcd = new EtcdCluster();
        using var fleet = new Fleet(output, etcd);
        var a = fleet.StartHost(2);
        var b = fleet.StartHost(2);
        Assert.Equal(0, fleet.Run("start", "--host", a.Address, Guests.Path("kv"), "--name", "kv", "--mem", "16M").Code);
        var acked = CrashTests.WriteAndCheckpoint(fleet, a.Address, 30);

        a.Stop(); // SIGSTOP: longer than its 2 s lease
        using var admin = new FleetAdmin(etcd.Endpoints);
        Fleet.Wait(() => admin.Hosts().All(h => h.Address != a.Address), 15000, "the stalled host's lease to expire");
        var recover = fleet.Fleetctl("recover", "kv", "--to", b.Address);
        Assert.True(recover.Code == 0, recover.Err);
        Assert.Equal((b.Address, 2L), (admin.Guest("kv").Owner, admin.Guest("kv").Epoch));

        a.Continue(); // SIGCONT: it finds itself fenced, re-reads the record, drops the guest
        a.WaitLogged("'kv' belongs to " + b.Address);
        Fleet.Wait(() => admin.Hosts().Any(h => h.Address == a.Address), 15000, "the host to register again");
        Assert.False(CrashTests.Runs(a.Address, "kv"));
        Assert.True(CrashTests.Runs(b.Address, "kv"));
        using (var c = HostClient.Connect(a.Address)) Assert.Equal(b.Address, c.Status("kv").Guests.Single().MovedTo);
        Assert.False(a.Logged("unfenced") && !a.Logged("dropped here")); // never unfenced with the guest
        CrashTests.AssertAcked(b.Address, acked);

        var status = fleet.Fleetctl("status", "kv");
        Assert.Equal(0, status.Code);
        Assert.Contains($"'kv' belongs to {b.Address}", status.Out);
        Assert.Contains("running", status.Out);
    }

    [Fact]
    public void A_host_registers_under_its_lease_shows_in_the_fleet_views_and_deregisters_on_a_clean_exit()
    {
        using var etcd = new EtcdCluster();
        using var fleet = new Fleet(output, etcd);
        var a = fleet.StartHost(30); // a long lease: only the deregistration can make it vanish soon
        var b = fleet.StartHost(30);
        Assert.Equal(0, fleet.Run("start", "--host", b.Address, Guests.Path("kv"), "--name", "kv", "--mem", "16M").Code);
        using var admin = new FleetAdmin(etcd.Endpoints);
        Fleet.Wait(() => admin.Hosts().Any(h => h.Address == b.Address && h.Guests.Any(g => g.Name == "kv")), 10000, "b's host record to list kv");
        var hosts = fleet.Fleetctl("hosts");
        Assert.Contains(a.Address, hosts.Out);
        Assert.Contains(b.Address, hosts.Out);
        var guests = fleet.Fleetctl("guests");
        Assert.Contains(b.Address, guests.Out);
        Assert.Contains("running", guests.Out);
        var status = fleet.Fleetctl("status", "kv");
        Assert.True(status.Code == 0, status.Err);
        Assert.Contains(b.Address, status.Out);

        var sw = System.Diagnostics.Stopwatch.StartNew();
        a.Terminate(); // SIGTERM: a clean exit revokes the lease
        Assert.True(a.Process.HasExited, "lm host did not exit on SIGTERM");
        Fleet.Wait(() => admin.Hosts().All(h => h.Address != a.Address), 5000, "the host record to go with the revoked lease");
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(15), $"gone only after {sw.Elapsed.TotalSeconds:F1} s: that is the lease expiring, not a deregistration");
        Assert.True(a.Logged("deregistered"), a.Log);
        Assert.DoesNotContain(a.Address, fleet.Fleetctl("hosts").Out);
    }

    [Fact]
    public void Draining_a_host_under_load_moves_every_guest_with_a_verified_digest_and_loses_no_acknowledged_set()
    {
        const int guests = 8; // the issue's figure
        using var etcd = new EtcdCluster();
        using var fleet = new Fleet(output, etcd);
        var a = fleet.StartHost(6);
        var b = fleet.StartHost(6);
        var c = fleet.StartHost(6);
        var clients = new List<KvClient>();
        for (int i = 0; i < guests; i++)
        {
            Assert.Equal(0, fleet.Run("start", "--host", a.Address, Guests.Path("kv"), "--name", $"kv{i}", "--mem", "16M").Code);
            var kv = new KvClient(a.Address, $"kv{i}");
            kv.WaitReady();
            clients.Add(kv);
        }
        using var stop = new CancellationTokenSource();
        var load = clients.Select(kv => Task.Run(() => kv.RunLoad(stop.Token))).ToList();
        Thread.Sleep(500);

        var drain = fleet.Fleetctl("drain", a.Address, "--parallel", "2", "--json");
        stop.Cancel();
        Task.WaitAll([.. load], TimeSpan.FromSeconds(60));
        Assert.True(drain.Code == 0, drain.Err + drain.Out);
        var lines = drain.Out.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        var perGuest = lines.Where(l => l.TryGetProperty("guest", out _)).ToList();
        Assert.Equal(guests, perGuest.Count);
        Assert.All(perGuest, g => Assert.True(g.GetProperty("success").GetBoolean(), g.ToString()));
        Assert.All(perGuest, g => Assert.True(g.GetProperty("digestVerified").GetBoolean(), g.ToString()));
        Assert.All(perGuest, g => Assert.NotEqual(a.Address, g.GetProperty("to").GetString()));
        output.WriteLine($"drain of {guests} guests: {lines.Last().GetProperty("seconds").GetDouble():F2} s");

        using var admin = new FleetAdmin(etcd.Endpoints);
        Assert.DoesNotContain(admin.Guests(), g => g.Owner == a.Address);
        Assert.Contains(a.Address, admin.Draining());
        foreach (var kv in clients)
        {
            Assert.True(kv.SetsAcknowledged > 0);
            Assert.Empty(kv.VerifyAll());
            kv.Dispose();
        }
        var refused = fleet.Run("start", "--host", a.Address, Guests.Path("kv"), "--name", "late", "--mem", "16M");
        Assert.NotEqual(0, refused.Code);
        Assert.Contains("draining", refused.Err);
        var hosts = fleet.Fleetctl("hosts");
        Assert.Contains("draining", hosts.Out);
        var auto = fleet.Fleetctl("migrate", "kv0", "--to", "auto", "--json");
        Assert.True(auto.Code == 0, auto.Err);
        Assert.DoesNotContain(a.Address, JsonDocument.Parse(auto.Out).RootElement.GetProperty("destination").GetString());
    }
}
