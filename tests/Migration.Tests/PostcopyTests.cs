using System.Text.RegularExpressions;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

/// <summary>Post-copy tests run on their own, not beside the rest: their guests run flat out on both hosts.</summary>
[CollectionDefinition("postcopy", DisableParallelization = true)]
public sealed class PostcopyCollection;

/// <summary>Post-copy: the guest resumes on the destination at once, its pages follow on demand and by a background push.</summary>
[Collection("postcopy")]
public sealed class PostcopyTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("compute_forever")]
    [InlineData("dirty_hotcold")]
    public void Running_guests_migrate_post_copy_and_every_page_verifies(string guest)
    {
        using var hosts = new Hosts(output);
        using var c = HostClient.Connect(hosts.A.Address);
        using var console = ConsoleClient.StartGuest(hosts.A, guest);
        var r = hosts.Migrate("g", hosts.A, hosts.B, "postcopy");
        output.WriteLine($"postcopy pages={r.PostcopyPages} requested={r.PostcopyRequestedPages} prepaged={r.PostcopyPrepagedPages} verified={r.PostcopyVerifiedPages} bytes={r.BytesPostcopy}");
        Assert.True(r.Success, r.Error);
        Assert.True(r.DigestVerified);
        Assert.True(r.PostcopyPages > 0);
        Assert.Equal(r.PostcopyPages, r.PostcopyVerifiedPages); // each page sent once, and each one's hash matched
        Assert.True(r.BytesPostcopy > 0);
        // The destination guest's wait for the pages it asked for is reported, and fits in the post-copy.
        // (a request for a page already on its way counts as a wait, not as a requested page)
        if (r.PostcopyRequestedPages > 0) Assert.True(r.PostcopyGuestWaitSeconds > 0);
        Assert.True(r.PostcopyGuestWaitSeconds < r.PostcopyDoneSeconds);
        Assert.Equal(1, hosts.RunningCount("g"));
        Assert.Null(hosts.A.FindInstance("g"));
        var dest = hosts.B.FindInstance("g")!;
        Assert.Equal(0, dest.Machine.Memory.AbsentPageCount);
        Assert.Equal(GuestStatus.Running, dest.State);

        console.AssertContinuesAfterMove("progress", 2);
    }

    /// <summary>
    /// `lm migrate --resume` (QEMU's migrate-recover): the link dies after GO with pages still missing;
    /// the destination guest stalls paused and the source holds its copy. A resume to a
    /// host that does not have the guest is refused and changes nothing; the resume to the right host
    /// sends exactly the missing pages, the stalled guest runs on with continuous output, and only
    /// then is the source copy released.
    /// </summary>
    [Fact]
    public void An_interrupted_post_copy_resumes_on_a_new_connection_and_the_guest_runs_on()
    {
        int cuts = 0;
        using var hosts = new Hosts(output, count: 3, fault: p => p == FaultPoint.Postcopy && Interlocked.Increment(ref cuts) == 1);
        using var c = HostClient.Connect(hosts.A.Address);
        using var console = ConsoleClient.StartGuest(hosts.A, "dirty_hotcold");
        var first = hosts.Migrate("g", hosts.A, hosts.B, "postcopy");
        Assert.False(first.Success);
        Assert.Contains("--resume", first.Error);
        // The source sees the cut at once; the destination may still be starting the guest. It must stop
        // on a missing page and stay paused: not exit, not crash.
        Hosts.WaitUntil(() => hosts.B.FindInstance("g") is { PageStalled: true }, 10000, "the destination guest to stall on a missing page");
        var stalled = hosts.B.FindInstance("g")!;
        Assert.Equal(GuestStatus.Paused, stalled.State);
        Assert.Null(stalled.Crash);
        Assert.Null(stalled.HaltReason);
        int absentBefore = stalled.Machine.Memory.AbsentPageCount;
        Assert.True(absentBefore > 0);
        var held = c.Status("g").Guests.Single();
        Assert.Equal(GuestStatus.Moved, held.Status);
        Assert.Contains("--resume", held.Migration);
        Assert.Contains("pages absent", HostClient.Connect(hosts.B.Address).Status("g").Guests.Single().Migration);
        // A name that is held here cannot be taken by a new guest meanwhile.
        Assert.Throws<HostException>(() => c.Start("g", Guests.Elf("idle"), 16 << 20, "idle"));

        var wrong = c.Migrate(new MigrateCommand { Name = "g", Target = hosts[2].Address, Resume = true });
        Assert.False(wrong.Success);
        Assert.Contains("no post-copy of 'g'", wrong.Error);
        Assert.Equal(absentBefore, hosts.B.FindInstance("g")!.Machine.Memory.AbsentPageCount);

        var resumed = c.Migrate(new MigrateCommand { Name = "g", Resume = true });
        output.WriteLine($"resume: pages={resumed.PostcopyPages} requested={resumed.PostcopyRequestedPages} verified={resumed.PostcopyVerifiedPages} bytes={resumed.BytesPostcopy} in {resumed.TotalSeconds * 1000:F0} ms");
        Assert.True(resumed.Success, resumed.Error);
        Assert.True(resumed.ResumedPostcopy);
        Assert.Equal((ulong)absentBefore, resumed.PostcopyPages); // exactly the missing pages, each once
        Assert.True(resumed.PostcopyVerifiedPages >= (ulong)absentBefore);
        var dest = hosts.B.FindInstance("g")!;
        Assert.Equal(0, dest.Machine.Memory.AbsentPageCount);
        Hosts.WaitUntil(() => dest.State == GuestStatus.Running, 5000, "the destination guest to run again");
        Assert.Equal(1, hosts.RunningCount("g"));
        var released = c.Status("g").Guests.Single();
        Assert.Equal(GuestStatus.Moved, released.Status);
        Assert.Equal("", released.Migration);

        console.AssertContinuesAfterMove("progress", 2);
        var again = Assert.Throws<HostException>(() => c.Migrate(new MigrateCommand { Name = "g", Resume = true }));
        Assert.Contains("nothing to resume", again.Message);
    }

    /// <summary>
    /// A page damaged on the wire fails its hash: it is not applied, post-copy stops with the guest
    /// paused (never running on a wrong page), and a resume delivers it intact.
    /// </summary>
    [Fact]
    public void A_damaged_post_copy_page_is_refused_and_a_resume_delivers_it_intact()
    {
        int damaged = 0;
        var log = new System.Collections.Concurrent.ConcurrentQueue<string>();
        void Log(string s) { log.Enqueue(s); try { output.WriteLine(s); } catch (InvalidOperationException) { } }
        using var a = new GuestHost(new HostOptions { Log = Log, CorruptPostcopyPage = _ => Interlocked.CompareExchange(ref damaged, 1, 0) == 0 });
        using var b = new GuestHost(new HostOptions { Log = Log });
        using var c = HostClient.Connect(a.Address);
        using var console = ConsoleClient.StartGuest(a, "dirty_hotcold");
        var first = c.Migrate(new MigrateCommand { Name = "g", Target = b.Address, Strategy = Strategy.Postcopy });
        Assert.False(first.Success);
        Assert.Contains(log, l => l.Contains("POST-COPY PAGE HASH MISMATCH"));
        var hosts = new Hosts(null, count: 0);
        Hosts.WaitUntil(() => b.FindInstance("g") is { PageStalled: true }, 10000, "the destination guest to stall on a missing page");
        Assert.True(b.FindInstance("g")!.Machine.Memory.AbsentPageCount > 0);

        var resumed = c.Migrate(new MigrateCommand { Name = "g", Resume = true });
        Assert.True(resumed.Success, resumed.Error);
        Assert.Equal(0, b.FindInstance("g")!.Machine.Memory.AbsentPageCount);
        console.AssertContinuesAfterMove("progress");
    }

    /// <summary>
    /// The link dies between ACK and GO in post-copy: the source has committed, so the destination
    /// learns GO by asking again, runs, and stalls on its first missing page. The source must keep its
    /// pages for that (not release the guest as after a log-shipping commit); a resume completes it.
    /// </summary>
    [Fact]
    public void A_lost_GO_in_post_copy_keeps_the_pages_for_a_resume()
    {
        int armed = 1;
        using var hosts = new Hosts(output, fault: p => p == FaultPoint.AfterAck && Interlocked.Exchange(ref armed, 0) == 1);
        using var c = HostClient.Connect(hosts.A.Address);
        using var console = ConsoleClient.StartGuest(hosts.A, "dirty_hotcold");
        var first = hosts.Migrate("g", hosts.A, hosts.B, "postcopy");
        Assert.False(first.Success);
        Assert.Contains("--resume", first.Error);
        Hosts.WaitUntil(() => hosts.B.FindInstance("g") is { PageStalled: true }, 10000, "the destination to ask for GO, run and stall on a missing page");

        var resumed = c.Migrate(new MigrateCommand { Name = "g", Resume = true });
        Assert.True(resumed.Success, resumed.Error);
        Assert.Equal(0, hosts.B.FindInstance("g")!.Machine.Memory.AbsentPageCount);
        Assert.Equal(1, hosts.RunningCount("g"));
        console.AssertContinuesAfterMove("progress");
    }
}
