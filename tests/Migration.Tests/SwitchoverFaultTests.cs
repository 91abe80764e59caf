using LiveMigration.Cli.Demo;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

/// <summary>
/// The switchover's fault holes (issue 10): a destination that dies after commit, one that stalls,
/// an ACK that races its timeout, post-copy dead ends. Each leaves exactly one runnable copy and an
/// exit an operator can take.
/// </summary>
public sealed class SwitchoverFaultTests(ITestOutputHelper output)
{
    /// <summary>
    /// The destination dies after the source committed, before it confirmed its resume: the source
    /// must not report success, keeps its paused copy under the name, and the operator's resolve
    /// (the destination is unreachable, so an explicit decision) brings the guest back with its data.
    /// </summary>
    [Theory]
    [InlineData("stopcopy")]
    [InlineData("log")]
    public void A_destination_dying_after_commit_leaves_the_paused_copy_held_and_the_operator_resumes_it(string strategy)
    {
        Hosts? hosts = null;
        int armed = 1;
        hosts = new Hosts(output, configure: o => o with
        {
            ResumeConfirmTimeout = TimeSpan.FromSeconds(1),
            DestinationFault = p =>
            {
                if (p != DestinationFaultPoint.BeforeResume || Interlocked.Exchange(ref armed, 0) != 1) return false;
                hosts!.Kill(1); // kill -9 of the destination host, GO in hand
                return true;
            },
        });
        using var _ = hosts;
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("kv", Guests.Elf("kv"), 16 << 20, "kv");
        using var client = new KvClient(hosts.A.Address, "kv");
        client.WaitReady();
        for (int i = 0; i < 20; i++) client.Set($"a{i}", $"x{i}");

        var r = hosts.Migrate("kv", hosts.A, hosts.B, strategy);
        Assert.Equal(0, Volatile.Read(ref armed));
        Assert.False(r.Success, "a success nobody confirmed");
        Assert.True(r.Committed);
        Assert.Contains("held", r.Error);
        Assert.Equal(0, hosts.RunningCount("kv")); // runs nowhere, but is not lost:

        using var a = HostClient.Connect(hosts.A.Address);
        var info = a.Status("kv").Guests.Single();
        Assert.Equal(GuestStatus.Moved, info.Status);
        Assert.Contains("held here", info.Migration);
        Assert.Throws<HostException>(() => a.Start("kv", Guests.Elf("idle"), 16 << 20, "idle")); // the name stays reserved
        var unreachable = Assert.Throws<HostException>(() => a.Resolve("kv"));
        Assert.Contains("unreachable", unreachable.Message);
        Assert.Contains("runs here again", a.Resolve("kv", "abort"));
        Assert.Equal(hosts.A.Address, hosts.RunningOn("kv"));
        Assert.Equal(1, hosts.RunningCount("kv"));
        for (int i = 0; i < 20; i++) Assert.Equal($"x{i}", client.Get($"a{i}"));
        client.Set("after", "crash");
        Assert.Empty(client.VerifyAll());
    }

    /// <summary>
    /// A destination that stops answering (SIGSTOP) from the setup on: the source never pauses toward
    /// it; past the silence limit it rolls back and the guest keeps running here. Once the destination
    /// wakes it discards its copy, and a retry succeeds.
    /// </summary>
    [Theory]
    [InlineData("log")]
    [InlineData("precopy")]
    [InlineData("stopcopy")]
    public void A_stalled_destination_is_never_paused_toward_and_the_migration_rolls_back(string strategy)
    {
        long stallUntil = 0;
        using var hosts = new Hosts(output,
            fault: p =>
            {
                if (p == FaultPoint.Setup) Interlocked.CompareExchange(ref stallUntil, Environment.TickCount64 + 4000, 0);
                return false;
            },
            configure: o => o with { Stalled = () => Environment.TickCount64 < Interlocked.Read(ref stallUntil), PeerSilenceLimit = TimeSpan.FromSeconds(1) });
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("kv", Guests.Elf("kv"), 16 << 20, "kv");
        using var client = new KvClient(hosts.A.Address, "kv");
        client.WaitReady();
        for (int i = 0; i < 20; i++) client.Set($"a{i}", $"x{i}");
        var guest = hosts.A.FindInstance("kv")!;
        bool done = false, pausedLate = false;
        var watcher = new Thread(() =>
        {
            // Instants of pause are fine (log shipping's C0, the rollback stopping the recorder); a
            // switchover pause toward the stalled peer would last until the silence limit.
            long pausedSince = -1;
            while (!Volatile.Read(ref done))
            {
                if (guest.State != GuestStatus.Paused) pausedSince = -1;
                else if (pausedSince < 0) pausedSince = Environment.TickCount64;
                else if (Environment.TickCount64 - pausedSince > 250) pausedLate = true;
                Thread.Sleep(1);
            }
        }) { IsBackground = true };
        watcher.Start();

        var r = hosts.Migrate("kv", hosts.A, hosts.B, strategy);
        Volatile.Write(ref done, true);
        watcher.Join();
        Assert.False(r.Success);
        Assert.Contains("has not answered", r.Error);
        Assert.True(r.TotalSeconds < 3.5, $"the source waited {r.TotalSeconds:F1} s for a stalled peer");
        Assert.Equal(hosts.A.Address, hosts.RunningOn("kv"));
        Assert.Equal(GuestStatus.Running, guest.State);
        if (strategy != "stopcopy") Assert.False(pausedLate, "the source paused toward a stalled destination"); // stop-and-copy may pause at once, before it could know
        Hosts.WaitUntil(() => hosts.B.Status().Guests.Count == 0, 15000, "the destination to discard its copy once it wakes");
        for (int i = 0; i < 20; i++) Assert.Equal($"x{i}", client.Get($"a{i}"));

        // The retry is against the woken destination. It may have discarded before waking (a receive
        // already under way when the stall began takes the Abort), so wait for the stall's end itself.
        Hosts.WaitUntil(() => Environment.TickCount64 >= Interlocked.Read(ref stallUntil), 15000, "the destination's stall to end");
        var retry = hosts.Migrate("kv", hosts.A, hosts.B, strategy);
        Assert.True(retry.Success, retry.Error);
        Assert.Equal(hosts.B.Address, hosts.RunningOn("kv"));
        Assert.Empty(client.VerifyAll());
    }

    /// <summary>
    /// The return-path reader holds the matching ACK (read, not yet acted on) while the ACK timeout
    /// fires: one of them decides. The timeout won, so the guest resumes here and no GO ever goes.
    /// </summary>
    [Fact]
    public void An_ack_racing_the_ack_timeout_never_leaves_two_runners()
    {
        int armed = 1;
        using var hosts = new Hosts(output,
            fault: p =>
            {
                if (p == FaultPoint.AckArrived && Interlocked.Exchange(ref armed, 0) == 1) Thread.Sleep(1500);
                return false;
            },
            configure: o => o with { AckTimeout = TimeSpan.FromMilliseconds(400) });
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("g", Guests.Elf("idle_forever"), 16 << 20, "idle_forever");
        Thread.Sleep(200);
        var r = hosts.Migrate("g", hosts.A, hosts.B, "stopcopy");
        Assert.Equal(0, Volatile.Read(ref armed));
        Assert.False(r.Success);
        Assert.False(r.Committed);
        Assert.Contains("timed out", r.Error);
        Thread.Sleep(1500); // the held ACK is acted on meanwhile: it must lose
        Hosts.WaitUntil(() => hosts.B.Status().Guests.Count == 0, what: "the destination to discard");
        Assert.Equal(1, hosts.RunningCount("g"));
        Assert.Equal(hosts.A.Address, hosts.RunningOn("g"));
        var g = hosts.A.FindInstance("g")!;
        ulong ic = g.Machine.Icount;
        Hosts.WaitUntil(() => g.Machine.Icount > ic, what: "the guest to keep running on the source");
    }

    /// <summary>
    /// Post-copy: the destination verifies every page but its PostcopyDone is late; the source gives
    /// up waiting and holds its copy. It must learn that the destination is complete and let the copy
    /// go, and nothing may keep recommending a `--resume` that can never succeed.
    /// </summary>
    [Fact]
    public void A_post_copy_completed_after_a_transient_stall_releases_the_source_copy()
    {
        int armed = 1;
        using var hosts = new Hosts(output, configure: o => o with
        {
            PostcopyDoneTimeout = TimeSpan.FromMilliseconds(300),
            DestinationFault = p =>
            {
                if (p == DestinationFaultPoint.BeforePostcopyDone && Interlocked.Exchange(ref armed, 0) == 1) Thread.Sleep(1500);
                return false;
            },
        });
        using var c = HostClient.Connect(hosts.A.Address);
        using var console = ConsoleClient.StartGuest(hosts.A, "dirty_hotcold");
        var r = hosts.Migrate("g", hosts.A, hosts.B, "postcopy");
        Assert.False(r.Success);
        Assert.Equal(0, Volatile.Read(ref armed));
        Hosts.WaitUntil(() => c.Status("g").Guests.Single().Migration == "", 10000, "the source to release its held copy");
        Assert.Equal(GuestStatus.Moved, c.Status("g").Guests.Single().Status);
        var dest = hosts.B.FindInstance("g")!;
        Assert.Equal(0, dest.Machine.Memory.AbsentPageCount);
        Assert.Equal(1, hosts.RunningCount("g"));
        var again = Assert.Throws<HostException>(() => c.Migrate(new MigrateCommand { Name = "g", Resume = true }));
        Assert.Contains("nothing to resume", again.Message);
        console.AssertContinuesAfterMove("progress");
    }

    /// <summary>
    /// Post-copy whose source dies with the pages: the destination guest stalls on a missing page.
    /// `lm stop` on the destination is the exit: it discards the guest and frees the name.
    /// </summary>
    [Fact]
    public void A_post_copy_guest_whose_source_died_can_be_stopped_on_the_destination()
    {
        int cuts = 0;
        using var hosts = new Hosts(output, fault: p => p == FaultPoint.Postcopy && Interlocked.Increment(ref cuts) == 1);
        using (var console = ConsoleClient.StartGuest(hosts.A, "dirty_hotcold"))
        {
            var first = hosts.Migrate("g", hosts.A, hosts.B, "postcopy");
            Assert.False(first.Success);
        }
        hosts.Kill(0); // the source dies, and the pages with it
        Hosts.WaitUntil(() => hosts.B.FindInstance("g") is { PageStalled: true }, 10000, "the destination guest to stall on a missing page");
        using var b = HostClient.Connect(hosts.B.Address);
        Assert.Contains("lm stop", b.Status("g").Guests.Single().Migration);
        Assert.Contains("stopped 'g'", b.Stop("g"));
        Assert.Empty(hosts.B.Status().Guests);
        b.Start("g", Guests.Elf("idle_forever"), 16 << 20, "idle_forever"); // the name is free again
        Assert.Equal(GuestStatus.Running, b.Status("g").Guests.Single().Status);
    }
}
