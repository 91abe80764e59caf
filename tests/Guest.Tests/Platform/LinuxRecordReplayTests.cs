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
            var replay = Tool.Run("dotnet", [Cli.LmRunTests.LmDll.Value, "replay", "--stats", trace], timeoutMs: 600_000);
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
        finally { File.Delete(trace); }
    }

    [GeneratedRegex(@"digests verified (?<digests>\d+)")]
    private static partial Regex Summary();
}
