using System.Diagnostics;
using LiveMigration.Cli.Demo;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using Xunit.Abstractions;

namespace LiveMigration.Fleet.Tests;

/// <summary>The ownership record and its transactions, with real etcd and hosts in this process.</summary>
public sealed class OwnershipTests(ITestOutputHelper output)
{
    private static void StartKv(GuestHost host, string name = "kv", string elf = "kv")
    {
        using var c = HostClient.Connect(host.Address);
        c.Start(name, Guests.Elf(elf), 16 << 20, elf);
    }

    [Fact]
    public void A_migration_commits_by_one_transaction_and_the_record_follows_the_guest()
    {
        using var etcd = new EtcdCluster();
        using var fleet = new InProcessFleet(output, etcd);
        StartKv(fleet.A);
        var rec = fleet.Admin.Guest("kv");
        Assert.Equal((fleet.A.Address, 1L), (rec.Owner, rec.Epoch));
        using var kv = new KvClient(fleet.A.Address, "kv");
        kv.WaitReady();
        for (int i = 0; i < 50; i++) kv.Set($"k{i}", $"v{i}");

        var r = fleet.Migrate("kv", fleet.A, fleet.B);
        Assert.True(r.Success, r.Error);
        Assert.True(r.DigestVerified);
        rec = fleet.Admin.Guest("kv");
        Assert.Equal((fleet.B.Address, 2L), (rec.Owner, rec.Epoch));
        Assert.Equal(1, fleet.RunningCount("kv"));
        Assert.NotNull(fleet.B.FindInstance("kv"));
        Assert.True(fleet.Member(0).LastCommitTime > TimeSpan.Zero);
        Assert.Empty(kv.VerifyAll());

        var back = fleet.Migrate("kv", fleet.B, fleet.A, "stopcopy");
        Assert.True(back.Success, back.Error);
        rec = fleet.Admin.Guest("kv");
        Assert.Equal((fleet.A.Address, 3L), (rec.Owner, rec.Epoch));
        Hosts(fleet, h => h.Address == fleet.A.Address && h.Guests.Any(g => g.Name == "kv" && g.Epoch == 3));
        Assert.Empty(kv.VerifyAll());
    }

    /// <summary>The host records list each host's guests (they are republished every half second).</summary>
    private static void Hosts(InProcessFleet fleet, Func<HostRecord, bool> condition) =>
        Fleet.Wait(() => fleet.Admin.Hosts().Any(condition), 10000, "the host records to show it");

    [Fact]
    public void A_lost_GO_settles_itself_the_destination_resumes_on_the_committed_record()
    {
        using var etcd = new EtcdCluster();
        int armed = 1;
        using var fleet = new InProcessFleet(output, etcd, fault: p => p == FaultPoint.AfterAck && Interlocked.Exchange(ref armed, 0) == 1);
        StartKv(fleet.A);
        using var kv = new KvClient(fleet.A.Address, "kv");
        kv.WaitReady();
        for (int i = 0; i < 20; i++) kv.Set($"k{i}", $"v{i}");
        var r = fleet.Migrate("kv", fleet.A, fleet.B, "stopcopy");
        Assert.True(r.Success, r.Error); // committed: the connection was cut before GO
        Fleet.Wait(() => fleet.B.FindInstance("kv") is { State: GuestStatus.Running }, 10000, "the destination to resume");
        Assert.Equal(1, fleet.RunningCount("kv"));
        Assert.Equal(fleet.B.Address, fleet.Admin.Guest("kv").Owner);
        Assert.Empty(kv.VerifyAll());
    }

    [Fact]
    public void A_rollback_after_the_final_state_moves_the_epoch_so_a_late_commit_cannot_apply()
    {
        using var etcd = new EtcdCluster();
        GuestHost? source = null;
        using var fleet = new InProcessFleet(output, etcd, fault: p => { if (p == FaultPoint.AfterFinalState) source!.Cancel("kv"); return false; });
        source = fleet.A;
        StartKv(fleet.A);
        var r = fleet.Migrate("kv", fleet.A, fleet.B, "stopcopy");
        Assert.False(r.Success);
        var rec = fleet.Admin.Guest("kv");
        Assert.Equal((fleet.A.Address, 2L), (rec.Owner, rec.Epoch)); // the rollback took epoch 2 for the source
        Assert.NotNull(fleet.Member(0).CommitMove("kv", fleet.A.Address, fleet.B.Address, 1)); // a commit of epoch 1 is refused
        Assert.False(fleet.Member(1).TakeOver("kv", fleet.A.Address, fleet.B.Address, 2)); // the source's lease holds
        Assert.Equal(fleet.A.Address, fleet.Admin.Guest("kv").Owner);
        Assert.Equal(GuestStatus.Running, fleet.A.FindInstance("kv")!.State);
    }

    [Fact]
    public void A_name_owned_by_another_host_cannot_start_and_a_draining_host_takes_no_guests()
    {
        using var etcd = new EtcdCluster();
        using var fleet = new InProcessFleet(output, etcd, count: 3);
        StartKv(fleet.A);
        var e = Assert.Throws<HostException>(() => StartKv(fleet.B));
        Assert.Contains($"belongs to {fleet.A.Address}", e.Message);

        fleet.Admin.SetDraining(fleet.B.Address, true);
        Assert.Contains("draining", Assert.Throws<HostException>(() => StartKv(fleet.B, "other")).Message);
        var r = fleet.Migrate("kv", fleet.A, fleet.B);
        Assert.False(r.Success);
        Assert.Contains("draining", r.Error);
        Assert.Equal(fleet[2].Address, fleet.Admin.Place(16 << 20, fleet.A.Address)); // placement skips B
        Assert.Equal(GuestStatus.Running, fleet.A.FindInstance("kv")!.State);
        Assert.Equal((fleet.A.Address, 1L), (fleet.Admin.Guest("kv").Owner, fleet.Admin.Guest("kv").Epoch)); // no rollback bump: it never paused

        using (var c = HostClient.Connect(fleet.A.Address)) c.Stop("kv");
        Assert.Throws<HostException>(() => fleet.Admin.Guest("kv")); // the record went with the guest
    }

    [Fact]
    public void A_host_that_loses_etcd_fences_its_guests_before_the_lease_expires_and_resumes_after_rereading()
    {
        using var etcd = new EtcdCluster();
        using var fleet = new InProcessFleet(output, etcd, count: 1, leaseTtl: 2);
        StartKv(fleet.A, elf: "compute_forever"); // always busy: standing still shows
        var guest = fleet.A.FindInstance("kv")!;
        Fleet.Wait(() => guest.Machine.Icount > 0, 5000, "the guest to run");
        var lost = Stopwatch.StartNew();
        etcd.Kill(0);
        Fleet.Wait(() => guest.State == GuestStatus.Fenced, 5000, "the guest to be fenced");
        // Fenced at about TTL/2 after the last keep-alive: well before the 2 s lease could expire.
        Assert.True(lost.Elapsed < TimeSpan.FromSeconds(2), $"fenced only after {lost.Elapsed.TotalMilliseconds:F0} ms");
        ulong at = guest.Machine.Icount;
        Thread.Sleep(500);
        Assert.Equal(at, guest.Machine.Icount); // it stands still

        etcd.Restart(0);
        Fleet.Wait(() => guest.State == GuestStatus.Running, 15000, "the guest to resume after the host re-read its record");
        Fleet.Wait(() => guest.Machine.Icount > at, 5000, "the guest to run again");
        Assert.Equal(fleet.A.Address, fleet.Admin.Guest("kv").Owner);
    }
}
