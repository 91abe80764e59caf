using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

public sealed class SwitchoverTests(ITestOutputHelper output)
{
    /// <summary>GO lost and the source gone for good: the destination waits; `lm resolve` settles it.</summary>
    [Fact]
    public void Lost_go_with_the_source_gone_is_resolved_by_the_operator()
    {
        int armed = 1;
        using var hosts = new Hosts(output, fault: p => p == FaultPoint.AfterAck && Interlocked.Exchange(ref armed, 0) == 1, goQueryMs: 3000,
            configure: o => o with { ResumeConfirmTimeout = TimeSpan.FromMilliseconds(500) });
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("g", Guests.Elf("idle_forever"), 16 << 20, "idle_forever");
        Thread.Sleep(200);
        var r = hosts.Migrate("g", hosts.A, hosts.B, "stopcopy");
        Assert.True(r.Committed, r.Error);         // committed at the ACK
        Assert.False(r.Success);                   // ... but no success nobody confirmed:
        Assert.Contains("did not confirm", r.Error); // GO did not get through
        hosts.Kill(0);                              // the source crashes before the destination asks

        using var b = HostClient.Connect(hosts.B.Address);
        Assert.Equal(DestinationState.AwaitingGo, b.Status("g").Guests.Single().Arrival);
        Assert.Null(hosts.B.FindInstance("g"));     // never runs without GO
        var e = Assert.Throws<HostException>(() => b.Resolve("g"));
        Assert.Contains("unreachable", e.Message);
        Assert.Contains("runs here", b.Resolve("g", "go"));
        Assert.Equal(GuestStatus.Running, b.Status("g").Guests.Single().Status);
        var g = hosts.B.FindInstance("g")!;
        ulong ic = g.Machine.Icount;
        Hosts.WaitUntil(() => g.Machine.Icount > ic, what: "the resolved guest to run");
    }

    /// <summary>Console input that reaches the source while it is paused is delivered on the destination, once.</summary>
    [Theory]
    [InlineData("stopcopy")]
    [InlineData("log")]
    public void Console_input_sent_during_the_pause_arrives_at_the_destination(string strategy)
    {
        ConsoleClient? console = null;
        using var hosts = new Hosts(output, fault: p =>
        {
            if (p != FaultPoint.BeforeAck || console == null) return false;
            console.Send("SET late yes\n");  // the guest is paused: this stays in the source's console queue
            Thread.Sleep(100);
            return false;
        });
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("kv", Guests.Elf("kv"), 16 << 20, "kv");
        console = new ConsoleClient(hosts.A.Address, "kv");
        using var _ = console;
        console.WaitFor(t => t.Contains("kv ready"));
        var r = hosts.Migrate("kv", hosts.A, hosts.B, strategy);
        Assert.True(r.Success, r.Error);
        console.Follow();
        console.WaitFor(t => t.Contains("OK\n"));    // the answer, produced on the destination
        console.Send("GET late\nSTATS\n");
        console.WaitFor(t => t.Contains("sets "));
        Assert.Contains("yes\n", console.Text);
        Assert.Contains("sets 1 ", console.Text);    // applied exactly once
    }
}
