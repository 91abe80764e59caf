using LiveMigration.Cli.Demo;
using LiveMigration.Fleet.Etcd;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using Xunit.Abstractions;

namespace LiveMigration.Fleet.Tests;

/// <summary>
/// The etcd transaction IS the switchover's decision: GO only when it committed. Refused or
/// unanswered, the migration aborts and the guest runs in exactly one place.
/// </summary>
public sealed class CommitPointTests(ITestOutputHelper output)
{
    private static KvClient StartKv(InProcessFleet fleet)
    {
        using (var c = HostClient.Connect(fleet.A.Address)) c.Start("kv", Guests.Elf("kv"), 16 << 20, "kv");
        var kv = new KvClient(fleet.A.Address, "kv");
        kv.WaitReady();
        for (int i = 0; i < 30; i++) kv.Set($"k{i}", $"v{i}");
        return kv;
    }

    /// <summary>The source runs the guest again, the destination has dropped its copy, no acknowledged SET is lost.</summary>
    private static void AssertBackOnSource(InProcessFleet fleet, KvClient kv, long epoch)
    {
        Fleet.Wait(() => fleet.A.FindInstance("kv") is { State: GuestStatus.Running }, 15000, "the source to resume the guest");
        Fleet.Wait(() => fleet.B.FindInstance("kv") == null && fleet.B.Status().Guests.All(g => g.Name != "kv"), 10000, "the destination to drop its copy");
        Assert.Equal(1, fleet.RunningCount("kv"));
        Assert.Equal((fleet.A.Address, epoch), (fleet.Admin.Guest("kv").Owner, fleet.Admin.Guest("kv").Epoch));
        Assert.Empty(kv.VerifyAll());
    }

    [Fact]
    public void A_refused_commit_takes_no_GO_the_source_resumes_and_the_destination_drops_its_copy()
    {
        using var etcd = new EtcdCluster();
        InProcessFleet? f = null;
        int armed = 1;
        // At the commit point the destination is marked draining: the transaction compares that it is not.
        using var fleet = f = new InProcessFleet(output, etcd, fault: p =>
        {
            if (p == FaultPoint.BeforeCommit && Interlocked.Exchange(ref armed, 0) == 1) f!.Admin.SetDraining(f.B.Address, true);
            return false;
        });
        using var kv = StartKv(fleet);
        var r = fleet.Migrate("kv", fleet.A, fleet.B, "stopcopy");
        Assert.False(r.Success);
        Assert.False(r.Committed);
        Assert.Contains("refused the commit", r.Error);
        Assert.Contains("draining", r.Error);
        AssertBackOnSource(fleet, kv, 2); // the rollback moved the epoch past the refused commit
        Assert.False(fleet.Logged("committed 'kv'"));
    }

    [Fact]
    public void A_commit_refused_because_the_record_moved_leaves_the_guest_to_the_record_and_runs_it_in_no_second_place()
    {
        using var etcd = new EtcdCluster();
        InProcessFleet? f = null;
        int armed = 1;
        // Another actor moved the record to the third host at the commit point (as a recover would).
        using var fleet = f = new InProcessFleet(output, etcd, count: 3, fault: p =>
        {
            if (p != FaultPoint.BeforeCommit || Interlocked.Exchange(ref armed, 0) != 1) return false;
            using var c = new EtcdClient(etcd.Endpoints.Split(','));
            c.Put(f!.Admin.Keys.Owner("kv"), f[2].Address);
            c.Put(f.Admin.Keys.Epoch("kv"), "2");
            return false;
        });
        using var kv = StartKv(fleet);
        var r = fleet.Migrate("kv", fleet.A, fleet.B, "stopcopy");
        Assert.False(r.Success);
        Assert.Contains("no longer names", r.Error);
        Fleet.Wait(() => fleet.A.FindInstance("kv") == null && fleet.B.FindInstance("kv") == null, 10000, "both hosts to drop the guest");
        Fleet.Wait(() => fleet.B.Status().Guests.All(g => g.Name != "kv"), 10000, "the destination to discard its incoming copy");
        Assert.Equal(0, fleet.RunningCount("kv"));
        Assert.Equal((fleet[2].Address, 2L), (fleet.Admin.Guest("kv").Owner, fleet.Admin.Guest("kv").Epoch));
    }

    [Fact]
    public void A_record_that_moved_during_the_log_phase_is_seen_before_the_pause_and_the_guest_is_never_paused_for_a_doomed_commit()
    {
        using var etcd = new EtcdCluster();
        InProcessFleet? f = null;
        int armed = 1;
        using var fleet = f = new InProcessFleet(output, etcd, count: 3, fault: p =>
        {
            if (p != FaultPoint.Log || Interlocked.Exchange(ref armed, 0) != 1) return false;
            using var c = new EtcdClient(etcd.Endpoints.Split(','));
            c.Put(f!.Admin.Keys.Owner("kv"), f[2].Address);
            c.Put(f.Admin.Keys.Epoch("kv"), "2");
            return false;
        });
        using var kv = StartKv(fleet);
        var r = fleet.Migrate("kv", fleet.A, fleet.B, "log");
        Assert.False(r.Success);
        Assert.Contains("not paused", r.Error);
        Assert.Contains("no longer names", r.Error);
        Assert.False(fleet.Logged("switchover: final state sent")); // no final state: the guest never paused for it
        Assert.False(fleet.Logged("committed 'kv'"));
        Fleet.Wait(() => fleet.B.FindInstance("kv") == null && fleet.B.Status().Guests.All(g => g.Name != "kv"), 10000, "the destination to discard its incoming copy");
        Assert.Equal((fleet[2].Address, 2L), (fleet.Admin.Guest("kv").Owner, fleet.Admin.Guest("kv").Epoch));
    }

    [Fact]
    public void Etcd_down_at_the_commit_aborts_the_migration_returns_with_the_guest_paused_and_the_source_resumes_once_the_record_is_settled()
    {
        using var etcd = new EtcdCluster();
        int armed = 1;
        using var fleet = new InProcessFleet(output, etcd, fault: p =>
        {
            if (p == FaultPoint.BeforeCommit && Interlocked.Exchange(ref armed, 0) == 1) etcd.Kill(0);
            return false;
        });
        using var kv = StartKv(fleet);
        var migrate = Task.Run(() => fleet.Migrate("kv", fleet.A, fleet.B, "stopcopy"));
        fleet.WaitLogged("commit of 'kv' not confirmed");
        // Bounded: the rollback cannot reach etcd either, so the migration returns and says what state the guest is in.
        Assert.True(migrate.Wait(TimeSpan.FromSeconds(30)), "the migration did not return while etcd was down");
        var r = migrate.Result;
        Assert.False(r.Success);
        Assert.False(r.Committed);
        Assert.Contains("did not confirm the commit", r.Error);
        Assert.Contains("stays paused on", r.Error);
        // Undecided: neither host may run it while etcd is away.
        Thread.Sleep(300);
        Assert.NotEqual(GuestStatus.Running, fleet.A.FindInstance("kv")?.State);
        Assert.Null(fleet.B.FindInstance("kv"));
        etcd.Restart(0);
        fleet.WaitLogged("settled after etcd answered", 30000);
        AssertBackOnSource(fleet, kv, 2);
    }
}
