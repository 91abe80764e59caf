using System.Net.Sockets;
using System.Text;
using LiveMigration.Cli.Demo;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Recorder.Disk;
using Xunit.Abstractions;

namespace LiveMigration.Fleet.Tests;

/// <summary>
/// `lm recover` of a guest with a drive, with real etcd and real `lm host` processes: each fleet
/// checkpoint is a RAM + disk pair taken in one pause, so the guest restarted elsewhere finds the
/// disk exactly as its RAM left it. The guest is guests/blk.c (random sector runs, each read back
/// and compared, a running checksum, then a checksum of the whole disk): after a kill -9 of its
/// host mid-run and a recovery, it must print what a run that never stopped prints and leave the
/// same image. Without its disk snapshot (or with a damaged one) the recovery is refused in one
/// line and nothing changes.
/// </summary>
public sealed class DiskRecoveryTests(ITestOutputHelper output) : IDisposable
{
    private const string Guest = "blk_long";
    private const int ImageBytes = 8 << 20;
    private readonly string _dir = Directory.CreateTempSubdirectory("lm-diskrec-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private string Dir(string name) => Directory.CreateDirectory(Path.Combine(_dir, name)).FullName;

    /// <summary>Every 5th block random (seeded), the rest zero.</summary>
    private static byte[] InitialImage()
    {
        var image = new byte[ImageBytes];
        var rng = new Random(13);
        for (int b = 0; b < ImageBytes / 4096; b += 5) rng.NextBytes(image.AsSpan(b * 4096, 4096));
        return image;
    }

    /// <summary>What the guest prints after its write loop, and leaves on its disk, when it never stops (an in-process host).</summary>
    private (string Tail, byte[] Image) Reference()
    {
        string img = Path.Combine(Dir("ref"), "ref.img");
        File.WriteAllBytes(img, InitialImage());
        using var host = new GuestHost(new HostOptions());
        using (var c = HostClient.Connect(host.Address)) c.Start("g", File.ReadAllBytes(Guests.Path(Guest)), 64 << 20, Guest, new DriveSpec(img, false));
        var sw = System.Diagnostics.Stopwatch.StartNew();
        using var console = new Console(host.Address, "g");
        console.WaitFor("blk: done", 120000);
        Fleet.Wait(() => host.FindInstance("g")!.State == GuestStatus.Exited, 10000, "the reference run's exit");
        output.WriteLine($"reference run: {sw.Elapsed.TotalSeconds:F1} s");
        return (TailOf(console.Text), File.ReadAllBytes(img));
    }

    private static string TailOf(string text) => text[text.IndexOf("blk: wrote", StringComparison.Ordinal)..];

    /// <summary>Starts the guest on <paramref name="a"/> from its own image and waits until a checkpoint pair taken mid-run is on shared storage.</summary>
    private static void StartAndCheckpointMidRun(Fleet fleet, LmHost a, string image)
    {
        File.WriteAllBytes(image, InitialImage());
        var start = fleet.Run("start", "--host", a.Address, Guests.Path(Guest), "--name", "g", "--mem", "64M", "--drive", image);
        Assert.True(start.Code == 0, start.Err);
        using var console = new Console(a.Address, "g");
        console.WaitFor("blk: 1000 runs", 60000);
        var after = DateTime.UtcNow;
        string dir = Path.Combine(fleet.CheckpointDir, "g");
        Fleet.Wait(() => Directory.Exists(dir) && Directory.GetFiles(dir, "*.disk").Any(f => File.GetLastWriteTimeUtc(f) > after)
            && Directory.GetFiles(dir, "*.ckpt").Any(f => File.GetLastWriteTimeUtc(f) > after), 15000, "a checkpoint pair taken mid-run");
        Assert.DoesNotContain("blk: wrote", console.Text); // still in its write loop: the checkpoint is mid-run
    }

    [Fact]
    public void A_guest_with_a_drive_recovered_after_a_kill_9_finds_its_disk_as_its_ram_left_it()
    {
        var reference = Reference();
        using var etcd = new EtcdCluster();
        using var fleet = new Fleet(output, etcd);
        var a = fleet.StartHost(3, "--disk-dir", Dir("a"));
        var b = fleet.StartHost(3, "--disk-dir", Dir("b"));
        StartAndCheckpointMidRun(fleet, a, Path.Combine(_dir, "a", "g.img"));

        a.Kill(); // kill -9 mid-run: its image has moved past the checkpoint (or not reached it)
        using var admin = new FleetAdmin(etcd.Endpoints);
        Fleet.Wait(() => admin.Hosts().All(h => h.Address != a.Address), 15000, "the dead host's lease to expire");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var r = fleet.Fleetctl("recover", "g", "--to", b.Address);
        Assert.True(r.Code == 0, r.Err);
        output.WriteLine($"lm recover took {sw.Elapsed.TotalMilliseconds:F0} ms (the pair checked, the disk copied, the guest started)");
        Assert.Contains("recovered 'g'", r.Out);
        Assert.Equal((b.Address, 2L), (admin.Guest("g").Owner, admin.Guest("g").Epoch));
        Assert.True(CrashTests.Runs(b.Address, "g"));
        Assert.True(b.Logged("and its disk snapshot"), b.Log);
        Assert.True(a.Logged("checkpoint pair of 'g' (epoch 1): paused"), a.Log);
        string placed = Path.Combine(_dir, "b", "g.2.img"); // NAME.EPOCH.img: never another image's name
        Assert.True(File.Exists(placed));

        // Its RAM and its disk agree: every run it reads back matches, and it ends as the run that never stopped.
        using var console = new Console(b.Address, "g");
        console.WaitFor("blk: done", 120000);
        Assert.DoesNotContain("differs", console.Text);
        Assert.DoesNotContain("failed", console.Text);
        Assert.Equal(reference.Tail, TailOf(console.Text));
        Fleet.Wait(() => HostClient.Connect(b.Address).Status("g").Guests.Single().Status == GuestStatus.Exited, 10000, "the recovered guest's exit");
        Assert.Equal(reference.Image, File.ReadAllBytes(placed));
        Assert.False(CrashTests.Runs(a.Address, "g")); // exactly one host ran it after the kill
    }

    [Fact]
    public void Recovering_a_guest_with_a_drive_without_its_disk_snapshot_or_with_a_damaged_one_is_refused_in_one_line_and_changes_nothing()
    {
        using var etcd = new EtcdCluster();
        using var fleet = new Fleet(output, etcd);
        var a = fleet.StartHost(3, "--disk-dir", Dir("a"));
        var b = fleet.StartHost(3, "--disk-dir", Dir("b"));
        var bare = fleet.StartHost(3); // keeps no disk images
        StartAndCheckpointMidRun(fleet, a, Path.Combine(_dir, "a", "g.img"));
        a.Kill();
        using var admin = new FleetAdmin(etcd.Endpoints);
        Fleet.Wait(() => admin.Hosts().All(h => h.Address != a.Address), 15000, "the dead host's lease to expire");
        string dir = Path.Combine(fleet.CheckpointDir, "g");
        string disk = FleetDiskSnapshot.Find(FleetMember.LatestCheckpoint(fleet.CheckpointDir, "g")!, out _)!;

        void Refused(string host, string expect)
        {
            var r = fleet.Fleetctl("recover", "g", "--to", host);
            Assert.NotEqual(0, r.Code);
            Assert.Contains(expect, r.Err);
            Assert.Single(r.Err.Trim().Split('\n'));
            Assert.Equal((a.Address, 1L), (admin.Guest("g").Owner, admin.Guest("g").Epoch)); // the epoch did not move
            Assert.False(admin.Guest("g").Info.Recover);
            Assert.False(CrashTests.Runs(host, "g"));
        }

        Refused(bare.Address, "keeps no disk images");
        // One block of the snapshot damaged: its digest is not the checkpoint's.
        var bytes = File.ReadAllBytes(disk);
        bytes[4096 * 7 + 100] ^= 0x5a;
        File.WriteAllBytes(disk, bytes);
        Refused(b.Address, "does not match the checkpoint");
        File.Delete(disk);
        Refused(b.Address, "has no disk snapshot beside it");
        Assert.Empty(Directory.GetFiles(Path.Combine(_dir, "b"))); // nothing placed on the target
    }

    /// <summary>A guest's console, read into a string (what a user attached with `lm console` sees).</summary>
    private sealed class Console : IDisposable
    {
        private readonly TcpClient _tcp = new();
        private readonly StringBuilder _text = new();

        public Console(string host, string name)
        {
            string address;
            using (var c = HostClient.Connect(host)) address = c.Status(name).Guests.Single().Console;
            var (h, p) = Migration.Transport.Address.Parse(address);
            _tcp.Connect(h, p);
            new Thread(() =>
            {
                var buffer = new byte[4096];
                try
                {
                    var s = _tcp.GetStream();
                    int n;
                    while ((n = s.Read(buffer)) > 0) lock (_text) _text.Append(Encoding.ASCII.GetString(buffer, 0, n));
                }
                catch (Exception e) when (e is IOException or ObjectDisposedException) { }
            }) { IsBackground = true }.Start();
        }

        public string Text { get { lock (_text) return _text.ToString(); } }

        public void WaitFor(string text, int timeoutMs) => Fleet.Wait(() => Text.Contains(text), timeoutMs, $"'{text}' on the console");

        public void Dispose() => _tcp.Dispose();
    }
}
