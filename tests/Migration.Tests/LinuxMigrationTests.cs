using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using LiveMigration.Cli.Commands;
using LiveMigration.Cli.Demo;
using LiveMigration.Guest.Platform;
using LiveMigration.Migration.Hosting;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

/// <summary>
/// A running Linux guest (our kernel and initramfs, the kv server on its console) migrates with every
/// strategy under kv load: the digest verifies, no acknowledged SET is lost, and the guest goes on
/// answering on the destination with a clock that kept counting (no jump beyond the downtime).
/// </summary>
public sealed partial class LinuxMigrationTests(ITestOutputHelper output)
{
    private void Log(string s)
    {
        try { output.WriteLine(s); } catch (InvalidOperationException) { }
    }

    public static BootImages Linux()
    {
        var (image, initramfs) = LiveMigration.Tests.Shared.RepoPaths.LinuxGuest();
        return new BootImages
        {
            Firmware = File.ReadAllBytes(KernelBootOptions.DefaultFirmware), Kernel = File.ReadAllBytes(image),
            Initrd = File.ReadAllBytes(initramfs), CommandLine = "console=ttyS0 earlycon",
        };
    }

    [Theory]
    [InlineData("stopcopy")]
    [InlineData("precopy")]
    [InlineData("postcopy")]
    [InlineData("log")]
    [InlineData("auto")]
    public void Linux_with_kv_load_migrates_and_loses_nothing(string strategy)
    {
        using var hosts = new Hosts(output);
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("linux", Linux(), 256 << 20, "Image");
        using var client = new KvClient(hosts.A.Address, "linux");
        client.WaitReady(timeoutMs: 120_000); // boot, JIT and all, on a loaded 2-core machine
        var (upBefore, wallBefore) = (Uptime(client), Stopwatch.GetTimestamp());

        using var stop = new CancellationTokenSource();
        var load = Task.Run(() => client.RunLoad(stop.Token));
        Thread.Sleep(500);
        var r = hosts.Migrate("linux", hosts.A, hosts.B, strategy, downtimeMs: 50);
        Thread.Sleep(500);
        stop.Cancel();
        load.Wait();
        Log($"{strategy}: downtime {r.DowntimeSeconds * 1000:F1} ms, total {r.TotalSeconds * 1000:F0} ms, bytes {r.BytesCheckpoint + r.BytesLog + r.BytesState + r.BytesProtocol + r.BytesPostcopy}, " +
            $"acknowledged SETs {client.SetsAcknowledged}, balloon-free pages {r.FreePages}");
        Assert.True(r.Success, r.Error);
        Assert.True(r.DigestVerified);
        Assert.Equal(hosts.B.Address, hosts.RunningOn("linux"));
        Assert.Equal(1, hosts.RunningCount("linux"));
        Assert.True(client.Acknowledged.Count > 10, $"only {client.Acknowledged.Count} SETs acknowledged");
        Assert.Empty(client.VerifyAll());

        // The kernel's clock went on across the move: its uptime advanced as the wall clock did, give or take the downtime.
        double upAfter = Uptime(client), wall = Stopwatch.GetElapsedTime(wallBefore).TotalSeconds;
        Log($"uptime advanced {upAfter - upBefore:F2} s over {wall:F2} s of wall time");
        Assert.InRange(upAfter - upBefore, wall - r.DowntimeSeconds - 1.0, wall + 1.0);
    }

    /// <summary>
    /// 64 MiB written and freed by the guest: with virtio-balloon the kernel reports them and pre-copy
    /// sends none of them; with --no-balloon there is no balloon, nothing is skipped and they all cross.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Free_pages_the_kernel_reports_are_never_sent(bool balloon)
    {
        using var hosts = new Hosts(output);
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("linux", Linux() with { Balloon = balloon }, 256 << 20, "Image");
        Assert.Equal(balloon, hosts.A.FindInstance("linux")!.Machine.Virtio!.Balloon != null);
        using var client = new KvClient(hosts.A.Address, "linux");
        client.WaitReady(timeoutMs: 120_000);
        client.Set("k", "v");
        Assert.Equal("churned 64 MiB", client.Request("churn 64"));
        Thread.Sleep(4000); // the kernel reports free pages 2 s after they gather
        var r = hosts.Migrate("linux", hosts.A, hosts.B, "precopy", downtimeMs: 50);
        ulong bytes = r.BytesCheckpoint + r.BytesLog + r.BytesState + r.BytesProtocol;
        Log($"balloon {balloon}: {bytes >> 20} MiB sent, {r.FreePages} free pages skipped");
        Assert.True(r.Success, r.Error);
        Assert.True(r.DigestVerified);
        Assert.Equal(balloon, hosts.B.FindInstance("linux")!.Machine.Virtio!.Balloon != null);
        if (balloon)
        {
            Assert.True(r.FreePages * 4096 >= 32UL << 20, $"only {r.FreePages} pages skipped");
            Assert.True(bytes < 48UL << 20, $"{bytes >> 20} MiB sent");
        }
        else
        {
            Assert.Equal(0UL, r.FreePages);
            Assert.True(bytes >= 64UL << 20, $"only {bytes >> 20} MiB sent: the churned pages did not cross");
        }
        Assert.Empty(client.VerifyAll());
    }

    private static double Uptime(KvClient client)
    {
        string reply = client.Request("uptime");
        var m = UptimeReply().Match(reply);
        Assert.True(m.Success, $"uptime answered '{reply}'");
        return double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    [GeneratedRegex(@"^up (\d+\.\d\d) s")]
    private static partial Regex UptimeReply();
}
