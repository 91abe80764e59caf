using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

/// <summary>The switchover's commit step is pluggable (a fleet's ownership transaction): what it is told, and what a refusal does.</summary>
public sealed class CommitStepTests(ITestOutputHelper output)
{
    private sealed class RecordingCommit(GuestHost host, string? refusal) : ISwitchoverCommit
    {
        private readonly PairwiseCommit _journal = new(host);
        public readonly List<(string Kind, SwitchoverRecord Record)> Calls = [];

        public string? Commit(SwitchoverRecord record)
        {
            lock (Calls) Calls.Add(("commit", record));
            return refusal ?? _journal.Commit(record);
        }

        public void Abort(SwitchoverRecord record)
        {
            lock (Calls) Calls.Add(("abort", record));
            _journal.Abort(record);
        }

        /// <summary>How many pre-pause checks answer "not yet" (a store that cannot say), and what state the guest was in at each.</summary>
        public int NotYet;
        public readonly List<GuestStatus> StatesAtCheck = [];

        public PauseCheck BeforePause(SwitchoverRecord record)
        {
            lock (Calls) StatesAtCheck.Add(host.FindInstance(record.Guest)!.State);
            return Interlocked.Decrement(ref NotYet) >= 0 ? new(PauseVerdict.NotYet, "the store did not answer") : PauseCheck.Go;
        }
    }

    [Theory]
    [InlineData("stopcopy")]
    [InlineData("log")]
    [InlineData("postcopy")]
    public void The_commit_step_runs_once_with_the_verified_point(string strategy)
    {
        RecordingCommit? step = null;
        using var hosts = new Hosts(output, configure: o => o with { SwitchoverCommit = h => step ??= new RecordingCommit(h, null) });
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("g", Guests.Elf("idle_forever"), 16 << 20, "idle_forever");
        Thread.Sleep(200);
        var r = hosts.Migrate("g", hosts.A, hosts.B, strategy);
        Assert.True(r.Success, r.Error);
        var (kind, record) = Assert.Single(step!.Calls);
        Assert.Equal("commit", kind);
        Assert.Equal((r.MigrationId, "g", hosts.A.Address, hosts.B.Address), (record.MigrationId, record.Guest, record.Source, record.Destination));
        Assert.Equal((r.Icount, r.Digest), (record.Icount, record.Digest));
        Assert.Equal(hosts.B.Address, hosts.RunningOn("g"));
    }

    /// <summary>A store that cannot say before the pause (an etcd election) delays the pause, the guest running on, and the migration then goes through.</summary>
    [Theory]
    [InlineData("log")]
    [InlineData("precopy")]
    public void The_pause_waits_with_the_guest_running_while_the_commit_step_cannot_say(string strategy)
    {
        RecordingCommit? step = null;
        using var hosts = new Hosts(output, configure: o => o with { SwitchoverCommit = h => step ??= new RecordingCommit(h, null) { NotYet = 5 } });
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("g", Guests.Elf("idle_forever"), 16 << 20, "idle_forever");
        Thread.Sleep(200);
        var r = hosts.Migrate("g", hosts.A, hosts.B, strategy);
        Assert.True(r.Success, r.Error);
        Assert.Equal(6, step!.StatesAtCheck.Count); // five "not yet", then the pause
        Assert.All(step.StatesAtCheck, s => Assert.Equal(GuestStatus.Running, s));
        Assert.Equal(hosts.B.Address, hosts.RunningOn("g"));
    }

    /// <summary>Past the budget the migration fails before any pause: the guest never stood still, the destination discards.</summary>
    [Fact]
    public void A_commit_step_that_never_answers_fails_the_migration_unpaused()
    {
        RecordingCommit? step = null;
        using var hosts = new Hosts(output, configure: o => o with { PauseCheckBudget = TimeSpan.FromMilliseconds(500), SwitchoverCommit = h => step ??= new RecordingCommit(h, null) { NotYet = int.MaxValue } });
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("g", Guests.Elf("idle_forever"), 16 << 20, "idle_forever");
        Thread.Sleep(200);
        var r = hosts.Migrate("g", hosts.A, hosts.B, "log");
        Assert.False(r.Success);
        Assert.False(r.Committed);
        Assert.Contains("not paused: the store did not answer", r.Error);
        Assert.Equal(["abort"], step!.Calls.Select(c => c.Kind)); // never a commit
        Assert.Equal(0, r.DowntimeSeconds);
        Hosts.WaitUntil(() => hosts.B.Status().Guests.Count == 0, what: "the destination to discard its copy");
        Assert.Equal(GuestStatus.Running, hosts.A.FindInstance("g")!.State);
    }

    /// <summary>A refused commit (the fleet's transaction failed) is an abort: the guest keeps running on the source, the destination discards.</summary>
    [Fact]
    public void A_refused_commit_rolls_the_migration_back()
    {
        RecordingCommit? step = null;
        using var hosts = new Hosts(output, configure: o => o with { SwitchoverCommit = h => step ??= new RecordingCommit(h, "the owner record changed") });
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("g", Guests.Elf("idle_forever"), 16 << 20, "idle_forever");
        Thread.Sleep(200);
        var r = hosts.Migrate("g", hosts.A, hosts.B, "stopcopy");
        Assert.False(r.Success);
        Assert.False(r.Committed);
        Assert.Contains("the owner record changed", r.Error);
        Assert.Equal(["commit", "abort"], step!.Calls.Select(c => c.Kind));
        Hosts.WaitUntil(() => hosts.B.Status().Guests.Count == 0, what: "the destination to discard its copy");
        Assert.Equal(hosts.A.Address, hosts.RunningOn("g"));
        var g = hosts.A.FindInstance("g")!;
        ulong ic = g.Machine.Icount;
        Hosts.WaitUntil(() => g.Machine.Icount > ic, what: "the guest to run on at the source");
        Assert.Equal(GuestStatus.Running, g.State);
    }
}
