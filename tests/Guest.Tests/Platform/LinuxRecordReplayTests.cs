using System.Text;
using System.Text.RegularExpressions;
using LiveMigration.Guest.Tests.Infra;
using Xunit.Abstractions;

namespace LiveMigration.Guest.Tests.Platform;

/// <summary>
/// Determinism on Linux: a live boot and kv session recorded with `lm run --kernel --record` replays
/// with `lm replay` to the end event, every logged state digest verified, printing the same console.
/// </summary>
public partial class LinuxRecordReplayTests(ITestOutputHelper log)
{
    [Fact]
    public void RecordedLiveBootReplaysBitExact()
    {
        var (image, initramfs) = LiveMigration.Tests.Shared.RepoPaths.LinuxGuest();
        string trace = Path.Combine(Path.GetTempPath(), $"lm-linux-{Guid.NewGuid():N}.trace");
        try
        {
            string recorded;
            using (var lm = new ConsoleProcess("dotnet", LinuxQemuTests.OursArgs(image, initramfs, "--record", trace)))
            {
                LinuxSession.Run(lm);
                recorded = lm.Output;
                log.WriteLine(lm.Stderr.ToString());
            }
            AssertReplays(trace, recorded);
        }
        finally { File.Delete(trace); }
    }

    /// <summary>
    /// The same with the ext4 data disk: the boot mounts it, kv writes and fdatasyncs a few SETs (disk
    /// requests whose completions the trace logs), and the replay on the image as it was at the start
    /// regenerates them to the same digests and console; the replay leaves that image untouched.
    /// </summary>
    [Fact]
    public void RecordedBootWithTheDataDiskAndSetsReplaysBitExact()
    {
        var (image, initramfs) = LiveMigration.Tests.Shared.RepoPaths.LinuxGuest();
        string dir = Directory.CreateTempSubdirectory("lm-linux-rr-disk-").FullName;
        try
        {
            string trace = Path.Combine(dir, "boot.trace");
            string recordedDisk = LiveMigration.Tests.Shared.RepoPaths.LinuxDataDisk(Path.Combine(dir, "rec.img"));
            string startDisk = LiveMigration.Tests.Shared.RepoPaths.LinuxDataDisk(Path.Combine(dir, "start.img"));
            byte[] blank = File.ReadAllBytes(startDisk);
            string recorded;
            using (var lm = new ConsoleProcess("dotnet", LinuxQemuTests.OursArgs(image, initramfs, "--drive", recordedDisk, "--record", trace)))
            {
                Assert.Contains("kv: 0 keys from /data/kv.log (0 records)\n", lm.WaitFor("kv ready\n", LinuxSession.Boot));
                for (int i = 0; i < 5; i++) Assert.Equal("OK", lm.Ask($"SET k{i} v{i}", LinuxSession.Reply));
                Assert.Equal("OK", lm.Ask("DEL k0", LinuxSession.Reply));
                Assert.Equal("v4", lm.Ask("GET k4", LinuxSession.Reply));
                lm.Send("poweroff");
                Assert.Equal(0, lm.WaitForExit(LinuxSession.Reply));
                recorded = lm.Output;
                log.WriteLine(lm.Stderr.ToString());
            }
            Assert.False(blank.AsSpan().SequenceEqual(File.ReadAllBytes(recordedDisk)), "the recording left the disk as it was");
            AssertReplays(trace, recorded, "--drive", startDisk);
            Assert.True(blank.AsSpan().SequenceEqual(File.ReadAllBytes(startDisk)), "the replay wrote the image");
        }
        finally { Directory.Delete(dir, true); }
    }

    private void AssertReplays(string trace, string recorded, params string[] extra)
    {
        var replay = Tool.Run("dotnet", [Cli.LmRunTests.LmDll.Value, "replay", "--stats", trace, .. extra], timeoutMs: 600_000);
        string stderr = replay.Stderr;
        log.WriteLine(stderr);
        Assert.False(replay.TimedOut, "lm replay did not finish in 10 min");
        Assert.Equal(0, replay.ExitCode);
        var summary = Summary().Match(stderr);
        Assert.True(summary.Success, $"no replay summary in:\n{stderr}");
        Assert.True(long.Parse(summary.Groups["digests"].Value) > 0, "no state digest was verified");
        // The replay prints what the guest printed: the recorded console, byte for byte.
        Assert.Equal(recorded, Encoding.Latin1.GetString(replay.Stdout));
    }

    [GeneratedRegex(@"digests verified (?<digests>\d+)")]
    private static partial Regex Summary();
}
