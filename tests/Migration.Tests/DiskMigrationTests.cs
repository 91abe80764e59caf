using System.IO.Hashing;
using System.Text.RegularExpressions;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Recorder.Disk;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

/// <summary>
/// A guest with a virtio-blk disk (guests/blk.c: random runs of sector writes, each read back and
/// compared, flushes, then a checksum of the whole disk) migrated mid-run between two hosts: its
/// output and its final image must be those of a run that never moved, with or without shared
/// storage, for every strategy.
/// </summary>
public sealed class DiskMigrationTests(ITestOutputHelper output) : IDisposable
{
    private const string Guest = "blk_long";
    private const int ImageBytes = 8 << 20;
    private readonly string _dir = Directory.CreateTempSubdirectory("lm-diskmig-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>Two hosts whose disk directory is this test's directory (a disk path outside it is refused).</summary>
    private Hosts TwoHosts(Func<FaultPoint, bool>? fault = null, Func<HostOptions, HostOptions>? configure = null) =>
        new(output, fault: fault, configure: o => (configure?.Invoke(o) ?? o) with { DiskDir = _dir });

    private string DirOf(string host)
    {
        string d = Path.Combine(_dir, host);
        Directory.CreateDirectory(d);
        return d;
    }

    /// <summary>The image the guest starts on: every 5th block random (seeded), the rest zero.</summary>
    internal static byte[] InitialImage()
    {
        var image = new byte[ImageBytes];
        var rng = new Random(13);
        for (int b = 0; b < ImageBytes / 4096; b += 5) rng.NextBytes(image.AsSpan(b * 4096, 4096));
        return image;
    }

    /// <summary>The initial image with 1 % of its blocks different (an older copy the destination holds).</summary>
    private static byte[] OlderCopy()
    {
        var image = InitialImage();
        var rng = new Random(7);
        int blocks = ImageBytes / 4096;
        for (int i = 0; i < blocks / 100; i++) rng.NextBytes(image.AsSpan(rng.Next(blocks) * 4096, 4096));
        return image;
    }

    /// <summary>What the guest prints and leaves on its disk when it never moves (once per test process).</summary>
    private static readonly Lazy<(string Tail, byte[] Image)> Reference = new(() =>
    {
        string dir = Directory.CreateTempSubdirectory("lm-diskref-").FullName;
        try
        {
            string img = Path.Combine(dir, "ref.img");
            File.WriteAllBytes(img, InitialImage());
            using var hosts = new Hosts(null, count: 1);
            using (var c = HostClient.Connect(hosts.A.Address)) c.Start("g", Guests.Elf(Guest), 64 << 20, Guest, new DriveSpec(img, false));
            using var console = new ConsoleClient(hosts.A.Address, "g");
            console.WaitFor(t => t.Contains("blk: done"), 60000);
            Hosts.WaitUntil(() => hosts.A.FindInstance("g")!.State == GuestStatus.Exited, 10000, "the reference run's exit");
            return (TailOf(console.Text), File.ReadAllBytes(img));
        }
        finally { Directory.Delete(dir, true); }
    });

    /// <summary>The lines after the write loop: the checksums of what was written and of the whole disk.</summary>
    private static string TailOf(string text) => text[text.IndexOf("blk: wrote", StringComparison.Ordinal)..];

    private static ulong Hash(string path) => XxHash3.HashToUInt64(File.ReadAllBytes(path));

    /// <summary>The guest started on A from A's g.img (the initial image); B's g.img is where it is to go.</summary>
    private (ConsoleClient Console, string Source, string Target, string DirB) StartGuest(Hosts hosts)
    {
        string a = DirOf("a"), b = DirOf("b");
        string source = Path.Combine(a, "g.img");
        File.WriteAllBytes(source, InitialImage());
        var (console, _) = StartOn(hosts, source);
        return (console, source, Path.Combine(b, "g.img"), b);
    }

    private (ConsoleClient Console, string SourceImage) StartOn(Hosts hosts, string image)
    {
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("g", Guests.Elf(Guest), 64 << 20, Guest, new DriveSpec(image, false));
        var console = new ConsoleClient(hosts.A.Address, "g");
        console.WaitFor(t => t.Contains("blk: 1000 runs"), 30000);
        return (console, image);
    }

    private MigrationReport Migrate(Hosts hosts, string strategy, string diskPath, string diskBase = "", bool shared = false, ulong bandwidth = 0)
    {
        using var c = HostClient.Connect(hosts.A.Address);
        var r = c.Migrate(new MigrateCommand
        {
            Name = "g", Target = hosts.B.Address, Strategy = Engine.Strategies.Parse(strategy), DowntimeLimitMs = 50,
            DiskPath = diskPath, DiskBase = diskBase, SharedDisk = shared, BandwidthBytesPerSecond = bandwidth,
        });
        output.WriteLine($"report: success={r.Success} error='{r.Error}' disk={r.DiskMode} bytes_disk={r.BytesDisk} blocks={r.DiskBlocksSent} zero={r.DiskZeroBlocks} matched={r.DiskBlocksMatched} " +
            $"postcopy_blocks={r.PostcopyDiskBlocks} requested={r.PostcopyRequestedDiskBlocks} verified={r.PostcopyVerifiedDiskBlocks} log={r.BytesLog} checkpoint={r.BytesCheckpoint} " +
            $"downtime={r.DowntimeSeconds * 1000:F1} ms total={r.TotalSeconds * 1000:F0} ms postcopy_done={r.PostcopyDoneSeconds * 1000:F0} ms passes=[{string.Join(" ", r.DiskBlocksPerPass)}] changed_since_first={r.DiskBlocksChangedSinceFirstPass}");
        return r;
    }

    /// <summary>
    /// Post-copy moves no disk block before the guest resumes on the destination: the blocks it lacks
    /// come after GO, those a guest request needs on demand, the rest pushed, each checked against its
    /// hash. Over a slow link the push takes seconds; meanwhile the guest runs on B (its requests
    /// fetch what they read), the source holds its paused copy, and the image is not yet in place.
    /// The source lets go only once every block arrived.
    /// </summary>
    [Fact]
    public void Post_copy_resumes_without_the_disk_and_fetches_blocks_on_demand_while_the_rest_is_pushed()
    {
        using var hosts = TwoHosts();
        var (console, source, target, b) = StartGuest(hosts);
        using var _c = console;

        var sourceMachine = hosts.A.FindInstance("g")!.Machine;
        var migration = Task.Run(() => Migrate(hosts, "postcopy", target, bandwidth: 2_000_000));
        // The guest runs on B with blocks still missing; the source still holds its copy.
        Hosts.WaitUntil(() => hosts.B.FindInstance("g") is { State: GuestStatus.Running } || migration.IsCompleted, 30000, "the guest to run on B");
        Assert.False(migration.IsCompleted, "the post-copy ended before it could be observed: the link limit no longer makes it slow");
        var disk = hosts.B.FindInstance("g")!.Machine.Disk!;
        Assert.True(disk.AwaitedBlocks > 0);
        Assert.False(sourceMachine.IsDisposed); // the paused source copy is kept: it holds the blocks still to come
        using (var cb = HostClient.Connect(hosts.B.Address)) Assert.Contains("disk blocks to come", cb.Status("g").Guests.Single().Migration);
        Assert.False(File.Exists(target)); // the image is put in place only when complete
        var r = migration.Result;

        Assert.True(r.Success, r.Error);
        Assert.Equal(0UL, r.DiskBlocksSent + r.DiskZeroBlocks); // nothing of the disk before the resume
        Assert.True(r.PostcopyDiskBlocks > 0);
        Assert.Equal(r.PostcopyDiskBlocks, r.PostcopyVerifiedDiskBlocks);
        Assert.True(r.PostcopyRequestedDiskBlocks > 0, "no guest request fetched a block");
        Assert.True(r.PostcopyRequestedDiskBlocks <= r.PostcopyDiskBlocks);
        Assert.True(r.PostcopyDoneSeconds > r.TotalSeconds - r.DowntimeSeconds); // completed after the resume
        Assert.Equal(0, disk.AwaitedBlocks);
        Assert.False(disk.HasAbsentBlocks);
        Assert.True(sourceMachine.IsDisposed); // released once every block was verified
        Assert.True(File.Exists(target));

        Assert.Equal(Reference.Value.Tail, FinishOnB(hosts, console));
        Assert.Equal(Reference.Value.Image, File.ReadAllBytes(target));
        Assert.Equal([target], Directory.GetFiles(b));
    }

    /// <summary>
    /// Pre-copy resends the disk's dirty blocks every round, as it does pages: with the disk workload
    /// writing, rounds after the first pass carry blocks, and the pause sends only what the last
    /// round dirtied — fewer than all the blocks changed since the first pass, which is what the
    /// pause sent before. The guest still ends exactly as if it never moved.
    /// </summary>
    [Fact]
    public void Pre_copy_resends_dirty_disk_blocks_every_round_so_the_pause_sends_only_the_last_rounds()
    {
        using var hosts = TwoHosts();
        var (console, source, target, b) = StartGuest(hosts);
        using var _c = console;

        var r = Migrate(hosts, "precopy", target);
        Assert.True(r.Success, r.Error);
        var passes = r.DiskBlocksPerPass;
        Assert.Equal((int)r.PrecopyRounds + 1, passes.Count); // the first pass, one per round before the pause, the pause
        Assert.Equal(r.DiskBlocksSent + r.DiskZeroBlocks, passes.Aggregate(0UL, (x, y) => x + y));
        ulong rounds = passes.Skip(1).SkipLast(1).Aggregate(0UL, (x, y) => x + y);
        Assert.True(rounds > 0, "no round after the first pass sent a disk block: the workload did not write during the migration");
        Assert.True(passes[^1] < r.DiskBlocksChangedSinceFirstPass, $"the pause sent {passes[^1]} blocks, not fewer than the {r.DiskBlocksChangedSinceFirstPass} changed since the first pass");

        Assert.Equal(Reference.Value.Tail, FinishOnB(hosts, console));
        Assert.Equal(Reference.Value.Image, File.ReadAllBytes(target));
    }

    /// <summary>
    /// A post-copy disk block damaged on the wire fails its hash: it is not applied, the link is cut,
    /// the destination guest waits (a request for a block that cannot come stalls it, never reads a
    /// wrong one), and `--resume` sends exactly what is still missing, intact.
    /// </summary>
    [Fact]
    public void A_damaged_post_copy_disk_block_is_refused_and_a_resume_delivers_it_intact()
    {
        int damaged = 0;
        using var hosts = TwoHosts(configure: o => o with { CorruptPostcopyBlock = _ => Interlocked.CompareExchange(ref damaged, 1, 0) == 0 });
        var (console, source, target, b) = StartGuest(hosts);
        using var _c = console;

        var first = Migrate(hosts, "postcopy", target);
        Assert.False(first.Success);
        Assert.Contains("--resume", first.Error);
        var disk = hosts.B.FindInstance("g")!.Machine.Disk!;
        Assert.True(disk.AwaitedBlocks > 0);
        Assert.False(File.Exists(target));

        var stalled = hosts.B.FindInstance("g")!;
        using var c = HostClient.Connect(hosts.A.Address);
        var resumed = c.Migrate(new MigrateCommand { Name = "g", Resume = true });
        Assert.Null(stalled.Crash);
        output.WriteLine($"resume: pages={resumed.PostcopyPages} blocks={resumed.PostcopyDiskBlocks} verified={resumed.PostcopyVerifiedDiskBlocks} error='{resumed.Error}'");
        Assert.True(resumed.Success, resumed.Error);
        Assert.True(resumed.PostcopyDiskBlocks > 0);
        Assert.Equal(0, disk.AwaitedBlocks);
        Assert.Equal(Reference.Value.Tail, FinishOnB(hosts, console));
        Assert.Equal(Reference.Value.Image, File.ReadAllBytes(target));
        Assert.Equal([target], Directory.GetFiles(b));
    }

    /// <summary>Follows the guest to B and waits for its end; returns the tail of its output.</summary>
    private static string FinishOnB(Hosts hosts, ConsoleClient console)
    {
        console.Follow();
        console.WaitFor(t => t.Contains("blk: done"), 60000);
        Hosts.WaitUntil(() => hosts.B.FindInstance("g")!.State == GuestStatus.Exited, 10000, "the guest's exit on B");
        Assert.DoesNotContain("failed", console.Text);
        Assert.DoesNotContain("differs", console.Text);
        return TailOf(console.Text);
    }

    [Theory]
    [InlineData("log", false)]
    [InlineData("log", true)]
    [InlineData("precopy", true)]
    [InlineData("stopcopy", false)]
    [InlineData("postcopy", false)]
    [InlineData("postcopy", true)]
    [InlineData("auto", true)]
    public void Without_shared_storage_the_disk_moves_and_the_guest_finishes_as_if_it_never_moved(string strategy, bool withBase)
    {
        using var hosts = TwoHosts();
        string a = DirOf("a"), b = DirOf("b");
        string source = Path.Combine(a, "g.img"), target = Path.Combine(b, "g.img"), older = Path.Combine(b, "older.img");
        File.WriteAllBytes(source, InitialImage());
        if (withBase) File.WriteAllBytes(older, OlderCopy());
        var (console, _) = StartOn(hosts, source);
        using var _c = console;

        var r = Migrate(hosts, strategy, target, withBase ? older : "");
        Assert.True(r.Success, r.Error);
        Assert.True(r.DigestVerified);
        Assert.Equal(withBase ? "base" : "copy", r.DiskMode);
        Assert.True(r.BytesDisk > 0);
        Assert.Equal(r.BytesCheckpoint + r.BytesLog + r.BytesState + r.BytesProtocol + r.BytesPostcopy + r.BytesDisk, r.BytesTotal);
        // Blocks either travel or were already there (the base's, or zeros on a fresh destination).
        Assert.True(r.DiskBlocksSent + r.DiskZeroBlocks + r.DiskBlocksMatched + r.PostcopyDiskBlocks >= ImageBytes / 4096);
        Assert.Equal(r.PostcopyDiskBlocks, r.PostcopyVerifiedDiskBlocks);
        ulong sourceAfterGo = Hash(source);
        Assert.Equal(1, hosts.RunningCount("g"));

        Assert.Equal(Reference.Value.Tail, FinishOnB(hosts, console));
        Assert.Equal(Reference.Value.Image, File.ReadAllBytes(target));
        Assert.Equal(sourceAfterGo, Hash(source)); // the source never wrote its image again
        if (withBase) Assert.Equal(OlderCopy(), File.ReadAllBytes(older)); // a base is only read
        string[] expected = withBase ? [older, target] : [target];
        Assert.Equal(expected.Order(), Directory.GetFiles(b).Order()); // no temporary image left
    }

    /// <summary>A destination that replays at 2 MIPS makes auto fall back: its disk returns to C0 with the rest, and the pause sends what changed since.</summary>
    [Fact]
    public void Auto_fallback_returns_the_disk_to_C0_and_the_guest_still_finishes_as_if_it_never_moved()
    {
        using var hosts = TwoHosts(configure: o => o with { ReplayMipsCap = 2 });
        var (console, source, target, b) = StartGuest(hosts);
        using var _c = console;

        var r = Migrate(hosts, "auto", target);
        Assert.True(r.Success, r.Error);
        Assert.Contains(r.Switches, s => s.To == Strategy.Precopy);
        Assert.Equal(Reference.Value.Tail, FinishOnB(hosts, console));
        Assert.Equal(Reference.Value.Image, File.ReadAllBytes(target));
    }

    [Theory]
    [InlineData("log")]
    [InlineData("precopy")]
    [InlineData("stopcopy")]
    public void With_shared_storage_no_block_crosses_and_the_source_never_writes_after_go(string strategy)
    {
        using var hosts = TwoHosts();
        string shared = Path.Combine(DirOf("shared"), "g.img");
        File.WriteAllBytes(shared, InitialImage());
        var (console, _) = StartOn(hosts, shared);
        using var _c = console;
        var sourceDisk = hosts.A.FindInstance("g")!.Machine.Disk!;

        var r = Migrate(hosts, strategy, shared, shared: true);
        Assert.True(r.Success, r.Error);
        Assert.Equal("shared", r.DiskMode);
        Assert.Equal(0UL, r.DiskBlocksSent);
        Assert.Equal(0UL, r.DiskZeroBlocks);
        Assert.True(r.BytesDisk < 100, $"{r.BytesDisk} disk bytes on the wire (only the DiskDone marker should cross)");
        long commitsAtGo = sourceDisk.CommitCount;

        Assert.Equal(Reference.Value.Tail, FinishOnB(hosts, console));
        Assert.Equal(commitsAtGo, sourceDisk.CommitCount); // the paused source flushed nothing after GO
        Assert.Equal(Reference.Value.Image, File.ReadAllBytes(shared)); // only the destination's writes came after
        Assert.Equal([shared], Directory.GetFiles(Path.GetDirectoryName(shared)!));
    }

    [Fact]
    public void A_peer_without_a_matching_disk_is_refused_up_front_in_one_line()
    {
        using var hosts = TwoHosts();
        string a = DirOf("a"), b = DirOf("b");
        string source = Path.Combine(a, "g.img");
        File.WriteAllBytes(source, InitialImage());
        string small = Path.Combine(b, "small.img");
        File.WriteAllBytes(small, new byte[1 << 20]);
        var (console, _) = StartOn(hosts, source);
        using var _c = console;

        var wrongBase = Migrate(hosts, "log", Path.Combine(b, "g.img"), small);
        Assert.False(wrongBase.Success);
        Assert.Contains($"disk mismatch: the source's disk is {ImageBytes} bytes, the base {small} here is {1 << 20} bytes", wrongBase.Error);
        var wrongShared = Migrate(hosts, "precopy", small, shared: true);
        Assert.Contains($"the shared file {small} here is {1 << 20} bytes", wrongShared.Error);
        var missing = Migrate(hosts, "precopy", Path.Combine(b, "nope.img"), shared: true);
        Assert.Contains("does not exist on this host", missing.Error);
        foreach (var e in new[] { wrongBase.Error, wrongShared.Error, missing.Error }) Assert.DoesNotContain('\n', e);

        // A different file of the same size: refused when the destination opens it (its identity is not the source's).
        string other = Path.Combine(b, "other.img");
        File.WriteAllBytes(other, new byte[ImageBytes]);
        var notSame = Migrate(hosts, "stopcopy", other, shared: true);
        Assert.False(notSame.Success);
        Assert.Contains("not the source's", notSame.Error);

        Assert.Equal(hosts.A.Address, hosts.RunningOn("g"));
        Assert.Equal(new[] { other, small }.Order(), Directory.GetFiles(b).Order());
        Assert.Equal(new byte[ImageBytes], File.ReadAllBytes(other));
    }

    /// <summary>
    /// The destination keeps images only in its disk directory: a disk path or base that leads
    /// anywhere else ("..", an absolute path elsewhere, a directory link or a file link pointing
    /// out) is refused in one line before a byte is written, and a host without a disk directory
    /// takes no disk at all. A relative path lands in the directory.
    /// </summary>
    [Fact]
    public void A_disk_path_outside_the_destinations_disk_directory_is_refused_before_a_byte_is_written()
    {
        string a = DirOf("a"), b = DirOf("b");
        string outside = Directory.CreateTempSubdirectory("lm-diskout-").FullName;
        try
        {
            using var hosts = new Hosts(output, configure: o => o with { DiskDir = b });
            string source = Path.Combine(a, "g.img");
            File.WriteAllBytes(source, InitialImage());
            string outsideBase = Path.Combine(outside, "base.img");
            File.WriteAllBytes(outsideBase, OlderCopy());
            Directory.CreateSymbolicLink(Path.Combine(b, "escape"), outside);
            File.CreateSymbolicLink(Path.Combine(b, "evil.img"), Path.Combine(outside, "evil.img"));
            File.CreateSymbolicLink(Path.Combine(b, "relative.img"), Path.Combine("..", "..", Path.GetFileName(outside), "rel.img"));
            var (console, _) = StartOn(hosts, source);
            using var _c = console;

            foreach (var (path, baseImage) in new[]
            {
                (Path.Combine("..", "a", "stolen.img"), ""),     // relative, up and out
                (Path.Combine(b, "..", "up.img"), ""),           // absolute with ..
                (Path.Combine(outside, "abs.img"), ""),          // absolute elsewhere
                (Path.Combine(b, "escape", "via-dir.img"), ""),  // a directory link that leads out
                (Path.Combine(b, "evil.img"), ""),               // a file link that leads out (its target does not exist yet)
                ("relative.img", ""),                            // a relative file link that leads out
                ("fine.img", outsideBase),                       // a base outside
            })
            {
                var r = Migrate(hosts, "log", path, baseImage);
                Assert.False(r.Success, $"{path} (base '{baseImage}') was accepted");
                Assert.Contains("is outside this host's disk directory", r.Error);
                Assert.DoesNotContain('\n', r.Error);
            }
            Assert.Equal([outsideBase], Directory.GetFiles(outside)); // nothing written out there
            Assert.Equal(OlderCopy(), File.ReadAllBytes(outsideBase));
            Assert.Equal([source], Directory.GetFiles(a));
            Assert.Equal(new[] { "escape", "evil.img", "relative.img" }.Order(), Directory.GetFileSystemEntries(b).Select(Path.GetFileName).Order());
            Assert.Equal(hosts.A.Address, hosts.RunningOn("g"));

            using (var bare = new GuestHost(new HostOptions()))
            using (var c = HostClient.Connect(hosts.A.Address))
            {
                var r = c.Migrate(new MigrateCommand { Name = "g", Target = bare.Address, Strategy = Strategy.Log, DiskPath = Path.Combine(b, "x.img") });
                Assert.False(r.Success);
                Assert.Contains("this host keeps no disk images", r.Error);
            }

            var ok = Migrate(hosts, "log", "moved.img"); // relative: in the disk directory
            Assert.True(ok.Success, ok.Error);
            Assert.Equal(Reference.Value.Tail, FinishOnB(hosts, console));
            Assert.Equal(Reference.Value.Image, File.ReadAllBytes(Path.Combine(b, "moved.img")));
        }
        finally { Directory.Delete(outside, true); }
    }

    /// <summary>
    /// A post-copy whose blocks cannot come (every one damaged on the wire) and that the operator
    /// gives up on (`lm stop` on the destination) leaves no image there: the incomplete one is
    /// never put in place, its temporary file goes.
    /// </summary>
    [Fact]
    public void An_abandoned_post_copy_leaves_no_image_on_the_destination()
    {
        using var hosts = TwoHosts(configure: o => o with { CorruptPostcopyBlock = _ => true });
        var (console, _, target, b) = StartGuest(hosts);
        using var _c = console;
        var r = Migrate(hosts, "postcopy", target);
        Assert.False(r.Success);
        Assert.Single(Directory.GetFiles(b)); // the temporary image, missing blocks
        using (var c = HostClient.Connect(hosts.B.Address)) c.Stop("g");
        Hosts.WaitUntil(() => Directory.GetFiles(b).Length == 0, 10000, "the temporary image to go");
        Assert.False(File.Exists(target));
    }

    [Theory]
    [InlineData("log", FaultPoint.Checkpoint)]
    [InlineData("precopy", FaultPoint.BeforeAck)]
    public void An_aborted_migration_leaves_no_image_on_the_destination(string strategy, FaultPoint cut)
    {
        bool armed = true;
        using var hosts = TwoHosts(fault: p => p == cut && armed && !(armed = false));
        string a = DirOf("a"), b = DirOf("b");
        string source = Path.Combine(a, "g.img"), target = Path.Combine(b, "g.img");
        File.WriteAllBytes(source, InitialImage());
        File.WriteAllBytes(target, new byte[] { 1, 2, 3 }); // whatever the destination held under that name before stays
        var (console, _) = StartOn(hosts, source);
        using var _c = console;

        var r = Migrate(hosts, strategy, target);
        Assert.False(r.Success);
        Hosts.WaitUntil(() => Directory.GetFiles(b).Length == 1, 10000, "the destination to drop its temporary image");
        Assert.Equal(new byte[] { 1, 2, 3 }, File.ReadAllBytes(target));
        Assert.Equal(hosts.A.Address, hosts.RunningOn("g"));

        // The guest runs on at the source, and a second migration goes through.
        var again = Migrate(hosts, strategy, target);
        Assert.True(again.Success, again.Error);
        Assert.Equal(Reference.Value.Tail, FinishOnB(hosts, console));
        Assert.Equal(Reference.Value.Image, File.ReadAllBytes(target));
    }

    /// <summary>
    /// Auto's last resort with a busy disk: log shipping falls back (replay capped at 2 MIPS), pre-copy
    /// cannot converge (no throttle, a 2 MB/s link, blk_forever rewriting its disk faster than that), so
    /// what is still dirty goes post-copy, disk blocks with it: on demand or pushed, each verified, the
    /// state digest (disk included) verified, and the guest writes on at the destination.
    /// </summary>
    [Fact]
    public void Auto_goes_post_copy_with_a_busy_disk_when_pre_copy_does_not_converge()
    {
        using var hosts = TwoHosts(configure: o => o with { ReplayMipsCap = 2 });
        string source = Path.Combine(DirOf("a"), "g.img"), target = Path.Combine(DirOf("b"), "g.img");
        File.WriteAllBytes(source, InitialImage());
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("g", Guests.Elf("blk_forever"), 64 << 20, "blk_forever", new DriveSpec(source, false));
        using var console = new ConsoleClient(hosts.A.Address, "g");
        console.WaitFor(t => t.Contains("blk: 1000 runs"), 30000);

        MigrationReport r;
        using (var c = HostClient.Connect(hosts.A.Address))
            r = c.Migrate(new MigrateCommand
            {
                Name = "g", Target = hosts.B.Address, Strategy = Strategy.Auto, DowntimeLimitMs = 10, BandwidthBytesPerSecond = 2_000_000,
                MaxThrottlePercent = 0, DiskPath = target,
            });
        foreach (var s in r.Switches) output.WriteLine($"switch at {s.T:F2} s: {s.From} -> {s.To}: {s.Reason}");
        output.WriteLine($"rounds={r.PrecopyRounds} disk passes=[{string.Join(" ", r.DiskBlocksPerPass)}] bytes_disk={r.BytesDisk} postcopy pages={r.PostcopyPages} " +
            $"postcopy disk blocks={r.PostcopyDiskBlocks} requested={r.PostcopyRequestedDiskBlocks} verified={r.PostcopyVerifiedDiskBlocks} downtime={r.DowntimeSeconds * 1000:F1} ms total={r.TotalSeconds * 1000:F0} ms");
        Assert.True(r.Success, r.Error);
        Assert.True(r.DigestVerified);
        Assert.Equal([Strategy.Log, Strategy.Precopy, Strategy.Postcopy], r.Switches.Select(s => s.To));
        Assert.Contains("pre-copy does not converge", r.Switches[2].Reason);
        Assert.Contains("dirty disk blocks", r.Switches[2].Reason); // the disk is named among what pre-copy could not move
        Assert.True(r.PostcopyDiskBlocks > 0, "no disk block went post-copy");
        Assert.Equal(r.PostcopyDiskBlocks, r.PostcopyVerifiedDiskBlocks);
        Assert.Equal(r.PostcopyPages, r.PostcopyVerifiedPages);
        Hosts.WaitUntil(() => File.Exists(target), 60000, "B's image once every block arrived");
        Assert.False(hosts.B.FindInstance("g")!.Machine.Disk!.HasAbsentBlocks);
        // It writes on at B: two more progress lines, each 1000 runs after the last (none lost or repeated across the move), no failed read-back.
        int seen = Regex.Matches(console.Text, @"(?m)^blk: \d+ runs").Count;
        console.Follow();
        console.WaitFor(t => Regex.Matches(t, @"(?m)^blk: \d+ runs").Count >= seen + 2, 30000);
        var runs = Regex.Matches(console.Text, @"(?m)^blk: (\d+) runs").Select(m => long.Parse(m.Groups[1].Value)).ToList();
        Assert.Equal(Enumerable.Range(1, runs.Count).Select(i => i * 1000L), runs);
        Assert.DoesNotContain("failed", console.Text);
        Assert.DoesNotContain("differs", console.Text);
    }
}
