using LiveMigration.Cli.Demo;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Recorder.Disk;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

/// <summary>
/// A Linux guest whose kv server keeps its keys on an ext4 data disk (every SET fdatasync'd before
/// its OK) migrates under kv load with no shared storage: the digest verifies, no acknowledged SET
/// is lost in memory, and — after the guest powers off on the destination, which commits its disk
/// there — a fresh boot from the destination's image file reads every acknowledged SET back from disk.
/// </summary>
public sealed class LinuxDiskMigrationTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("lm-linuxdisk-").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private void Log(string s)
    {
        try { output.WriteLine(s); } catch (InvalidOperationException) { }
    }

    private string DirOf(string host) => Directory.CreateDirectory(Path.Combine(_dir, host)).FullName;

    [Theory]
    [InlineData("log")]
    [InlineData("precopy")]
    [InlineData("postcopy")]
    [InlineData("auto")]
    [InlineData("stopcopy")]
    public void Linux_with_a_data_disk_migrates_under_kv_load_and_every_acknowledged_set_is_on_the_destinations_disk(string strategy)
    {
        using var hosts = new Hosts(output, configure: o => o with { DiskDir = _dir });
        string source = LiveMigration.Tests.Shared.RepoPaths.LinuxDataDisk(Path.Combine(DirOf("a"), "data.img"));
        string target = Path.Combine(DirOf("b"), "data.img");
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("linux", LinuxMigrationTests.Linux(), 256 << 20, "Image", new DriveSpec(source, false));
        using var client = new KvClient(hosts.A.Address, "linux");
        client.WaitReady(timeoutMs: 120_000);

        using var stop = new CancellationTokenSource();
        var load = Task.Run(() => client.RunLoad(stop.Token));
        Thread.Sleep(1000);
        MigrationReport r;
        using (var c = HostClient.Connect(hosts.A.Address))
            r = c.Migrate(new MigrateCommand
            {
                Name = "linux", Target = hosts.B.Address, Strategy = Engine.Strategies.Parse(strategy), DowntimeLimitMs = 50, DiskPath = target,
            });
        Thread.Sleep(1000);
        stop.Cancel();
        load.Wait();
        Log($"{strategy}: success={r.Success} '{r.Error}' disk={r.DiskMode} bytes_disk={r.BytesDisk} blocks={r.DiskBlocksSent} zero={r.DiskZeroBlocks} " +
            $"postcopy_blocks={r.PostcopyDiskBlocks} requested={r.PostcopyRequestedDiskBlocks} passes=[{string.Join(" ", r.DiskBlocksPerPass)}] " +
            $"ram+state+log={r.BytesCheckpoint + r.BytesLog + r.BytesState + r.BytesPostcopy} downtime={r.DowntimeSeconds * 1000:F1} ms total={r.TotalSeconds * 1000:F0} ms " +
            $"acknowledged SETs {client.SetsAcknowledged} ({client.Acknowledged.Count} keys)");
        Assert.True(r.Success, r.Error);
        Assert.True(r.DigestVerified);
        Assert.Equal(hosts.B.Address, hosts.RunningOn("linux"));
        Assert.True(client.Acknowledged.Count > 10, $"only {client.Acknowledged.Count} SETs acknowledged");
        Assert.Empty(client.VerifyAll());

        // Power off on B: the guest unmounts /data and the host commits the disk to B's image file.
        Assert.Equal("BYE", client.Request("QUIT"));
        Hosts.WaitUntil(() => hosts.B.FindInstance("linux")!.State == GuestStatus.Exited, 60000, "the guest's power-off on B");
        Hosts.WaitUntil(() => File.Exists(target), 30000, "B's image file");

        // A new guest booted from B's image alone: every acknowledged SET comes from the disk.
        using (var c = HostClient.Connect(hosts.B.Address)) c.Start("again", LinuxMigrationTests.Linux(), 256 << 20, "Image", new DriveSpec(target, false));
        using var again = new KvClient(hosts.B.Address, "again");
        again.WaitReady(timeoutMs: 120_000);
        foreach (var (k, v) in client.Acknowledged) again.Acknowledged[k] = v;
        Assert.Empty(again.VerifyAll());
        // The resync nonces the client sets are keys too: at least the acknowledged ones, none set since the boot.
        var stats = again.Request("STATS").Split(' ');
        Assert.True(int.Parse(stats[1]) >= client.Acknowledged.Count, string.Join(' ', stats));
    }
}
