using System.Diagnostics;
using System.Text.Json;
using LiveMigration.Cli.Demo;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using Xunit.Abstractions;

namespace LiveMigration.Fleet.Tests;

/// <summary>
/// etcd away while hosts live on, with real etcd and real `lm host` processes: a migration whose
/// commit and rollback etcd cannot answer returns to the operator while the guest stays paused, and
/// settles once etcd is back; a host partitioned from etcd fences its guests before its lease can
/// expire, never resumes one that moved meanwhile, and rejoins when the partition heals.
/// </summary>
public sealed class EtcdOutageTests(ITestOutputHelper output)
{
    private static GuestInfo Info(string host, string name)
    {
        using var c = HostClient.Connect(host);
        return c.Status(name).Guests.Single();
    }

    /// <summary>The guest stands still: not running, and its icount does not move (it had work queued: a kv guest idles only waiting for input).</summary>
    private static void AssertStill(string host, string name, int ms = 500)
    {
        var before = Info(host, name);
        Assert.NotEqual(GuestStatus.Running, before.Status);
        Thread.Sleep(ms);
        Assert.Equal(before.Icount, Info(host, name).Icount);
    }

    /// <summary>The guest runs on <paramref name="host"/>: it answers on its console there.</summary>
    private static void WaitAnswering(string host, string name)
    {
        Fleet.Wait(() => Info(host, name).Status == GuestStatus.Running, 15000, $"'{name}' to run on {host}");
        using var kv = new KvClient(host, name);
        kv.Set("probe", name);
        Assert.Equal(name, kv.Get("probe"));
        Assert.Equal(host, kv.CurrentHost);
    }

    [Fact]
    public void Etcd_down_at_the_commit_returns_lm_migrate_within_a_bound_and_the_host_settles_the_paused_guest_when_etcd_is_back()
    {
        using var etcd = new EtcdCluster();
        using var fleet = new Fleet(output, etcd);
        var a = fleet.StartHost(3, "--fault-at", "BeforeCommit:hold-1500");
        var b = fleet.StartHost(3);
        Assert.Equal(0, fleet.Run("start", "--host", a.Address, Guests.Path("kv"), "--name", "kv", "--mem", "16M").Code);
        var acked = CrashTests.WriteAndCheckpoint(fleet, a.Address, 30);

        var migrate = Task.Run(() => fleet.Run("migrate", "kv", "--from", a.Address, "--to", b.Address, "--strategy", "stopcopy", "--json"));
        a.WaitLogged("holding at BeforeCommit");
        var sw = Stopwatch.StartNew();
        etcd.Kill(0); // before the transaction: neither the commit nor the rollback can get an answer
        // The bound: what is left of the hold, the commit's budget (2 s) and the rollback's (5 s); "forever" before.
        Assert.True(migrate.Wait(TimeSpan.FromSeconds(40)), "lm migrate did not return while etcd was down");
        output.WriteLine($"lm migrate returned {sw.Elapsed.TotalSeconds:F1} s after etcd went down");
        var r = migrate.Result;
        Assert.NotEqual(0, r.Code);
        string error = JsonDocument.Parse(r.Out).RootElement.GetProperty("error").GetString()!;
        Assert.DoesNotContain('\n', error);
        Assert.Contains($"'kv' stays paused on {a.Address}", error);
        Assert.Contains("resumes by itself once etcd answers", error);
        Assert.Contains("`lm recover kv --to HOST", error);

        // While etcd is away the guest runs nowhere: paused on the source (its status says why and what resolves it), nothing on the destination.
        var info = Info(a.Address, "kv");
        Assert.Equal(GuestStatus.MigratingOut, info.Status);
        Assert.Contains("paused until etcd answers", info.Migration);
        AssertStill(a.Address, "kv");
        Assert.False(CrashTests.Runs(b.Address, "kv"));
        using (var c = HostClient.Connect(a.Address))
            Assert.Contains("paused until etcd answers", Assert.Throws<HostException>(() => c.Cancel("kv")).Message);

        etcd.Restart(0);
        a.WaitLogged("settled after etcd answered");
        var (runner, recovered) = CrashTests.Settle(fleet, [a, b], "kv");
        Assert.Equal((a.Address, false), (runner, recovered)); // the commit never reached etcd: the record still named the source
        WaitAnswering(a.Address, "kv");
        Assert.False(CrashTests.Runs(b.Address, "kv"));
        using var admin = new FleetAdmin(etcd.Endpoints);
        Assert.Equal((a.Address, 2L), (admin.Guest("kv").Owner, admin.Guest("kv").Epoch)); // the rollback moved the epoch past the commit
        CrashTests.AssertAcked(a.Address, acked);
    }

    /// <summary>
    /// The exit an operator takes when etcd stays away: `lm stop` on the source discards the copy an
    /// unsettled rollback keeps paused (one line), `lm status` no longer lists it, nothing runs it, and
    /// once etcd is back the host only removes its record: it is never resurrected here or on the destination.
    /// </summary>
    [Fact]
    public void Lm_stop_discards_the_copy_an_unsettled_rollback_keeps_paused_and_etcd_coming_back_does_not_resurrect_it()
    {
        using var etcd = new EtcdCluster();
        using var fleet = new Fleet(output, etcd);
        var a = fleet.StartHost(3, "--fault-at", "BeforeCommit:hold-1500");
        var b = fleet.StartHost(3);
        Assert.Equal(0, fleet.Run("start", "--host", a.Address, Guests.Path("kv"), "--name", "kv", "--mem", "16M").Code);
        CrashTests.WriteAndCheckpoint(fleet, a.Address, 10);

        var migrate = Task.Run(() => fleet.Run("migrate", "kv", "--from", a.Address, "--to", b.Address, "--strategy", "stopcopy", "--json"));
        a.WaitLogged("holding at BeforeCommit");
        etcd.Kill(0);
        Assert.True(migrate.Wait(TimeSpan.FromSeconds(40)), "lm migrate did not return while etcd was down");
        Assert.Contains("`lm stop kv --host", JsonDocument.Parse(migrate.Result.Out).RootElement.GetProperty("error").GetString());
        Assert.Contains("`lm stop kv` discards it", Info(a.Address, "kv").Migration);

        var stop = fleet.Run("stop", "kv", "--host", a.Address);
        Assert.True(stop.Code == 0, stop.Err);
        Assert.Contains("discarded the copy of 'kv' paused here", stop.Out);
        Assert.Contains("never runs again on this host", stop.Out);
        Assert.Single(stop.Out.Trim().Split('\n'));
        using (var c = HostClient.Connect(a.Address)) Assert.DoesNotContain(c.Status().Guests, g => g.Name == "kv");
        Assert.DoesNotContain("kv", fleet.Run("status", "--host", a.Address).Out);
        Assert.False(CrashTests.Runs(a.Address, "kv"));
        Assert.False(CrashTests.Runs(b.Address, "kv"));
        var again = fleet.Run("stop", "kv", "--host", a.Address);
        Assert.NotEqual(0, again.Code); // gone: nothing left to stop

        etcd.Restart(0);
        a.WaitLogged("(discarded here by lm stop) settled after etcd answered: its record is removed");
        using var admin = new FleetAdmin(etcd.Endpoints);
        Fleet.Wait(() => admin.Guests().All(g => g.Name != "kv"), 10000, "the record of 'kv' to go");
        Thread.Sleep(3000); // a reconcile round or several, and the destination's watch, have seen etcd again
        Assert.False(CrashTests.Runs(a.Address, "kv"));
        Assert.False(CrashTests.Runs(b.Address, "kv"));
        using (var c = HostClient.Connect(a.Address)) Assert.DoesNotContain(c.Status().Guests, g => g.Name == "kv");
    }

    [Fact]
    public void A_host_cut_off_from_etcd_fences_before_its_lease_expires_does_not_resume_a_guest_that_moved_and_rejoins_after_the_partition()
    {
        using var etcd = new EtcdCluster();
        using var cut = new TcpCut(etcd.Endpoint(0));
        using var fleet = new Fleet(output, etcd);
        const double ttl = 3;
        var a = fleet.StartHostVia(cut.Url, ttl);
        var b = fleet.StartHost(ttl);
        Assert.Equal(0, fleet.Run("start", "--host", a.Address, Guests.Path("kv"), "--name", "kv", "--mem", "16M").Code);
        Assert.Equal(0, fleet.Run("start", "--host", a.Address, Guests.Path("kv"), "--name", "stays", "--mem", "16M").Code);
        var acked = CrashTests.WriteAndCheckpoint(fleet, a.Address, 30);
        using var admin = new FleetAdmin(etcd.Endpoints);
        WaitAnswering(a.Address, "kv");

        var sw = Stopwatch.StartNew();
        cut.Cut(); // a stays alive and reachable by its operator; only etcd is out of its reach
        double fencedAt = -1, goneAt = -1;
        Fleet.Wait(() =>
        {
            // Fencing: stopped at its next instruction (an idle guest has none to run until input comes, and then it stops).
            if (fencedAt < 0 && new[] { "kv", "stays" }.All(n => Info(a.Address, n).Status is GuestStatus.Fenced or GuestStatus.Fencing)) fencedAt = sw.Elapsed.TotalSeconds;
            if (goneAt < 0 && admin.Hosts().All(h => h.Address != a.Address)) goneAt = sw.Elapsed.TotalSeconds;
            return fencedAt >= 0 && goneAt >= 0;
        }, 20000, "the partitioned host to fence its guests and its lease to expire");
        Assert.True(fencedAt >= 0 && goneAt >= 0, $"fenced at {fencedAt:F2} s, lease gone at {goneAt:F2} s");
        output.WriteLine($"fenced {fencedAt:F2} s after the cut, lease gone {goneAt:F2} s after it (TTL {ttl} s)");
        Assert.True(fencedAt < goneAt, $"fenced at {fencedAt:F2} s, but the lease was gone at {goneAt:F2} s: another host could have run the guests meanwhile");
        AssertStill(a.Address, "kv");
        Assert.True(a.Logged("fenced"), a.Log);

        // Its lease is gone: the operator restarts one guest elsewhere; the other is left to its owner.
        var recover = fleet.Fleetctl("recover", "kv", "--to", b.Address);
        Assert.True(recover.Code == 0, recover.Err);
        Assert.Equal((b.Address, 2L), (admin.Guest("kv").Owner, admin.Guest("kv").Epoch));
        Assert.True(CrashTests.Runs(b.Address, "kv"));
        Assert.NotEqual(GuestStatus.Running, Info(a.Address, "kv").Status);

        cut.Heal();
        a.WaitLogged("'kv' belongs to " + b.Address);
        Fleet.Wait(() => admin.Hosts().Any(h => h.Address == a.Address), 15000, "the host to register again");
        Assert.False(CrashTests.Runs(a.Address, "kv")); // it moved: never resumed here
        using (var c = HostClient.Connect(a.Address)) Assert.Equal(b.Address, c.Status("kv").Guests.Single().MovedTo);
        WaitAnswering(a.Address, "stays"); // still its: resumed once the record was re-read
        Assert.True(a.Logged("unfenced"), a.Log);
        Assert.Equal(a.Address, admin.Guest("stays").Owner);
        Assert.Single(new[] { a.Address, b.Address }, h => CrashTests.Runs(h, "kv"));
        CrashTests.AssertAcked(b.Address, acked);
    }
}
