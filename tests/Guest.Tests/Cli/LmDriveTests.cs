using System.Text;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Cli;

/// <summary>`--drive` through the real CLI: the guest's flushes reach the file, a trace replays only against the image it began with, bad drives fail in one line.</summary>
public class LmDriveTests
{
    private static ToolResult Lm(params string[] args)
    {
        var r = Tool.Run("dotnet", [LmRunTests.LmDll.Value, .. args], [], timeoutMs: 120_000);
        Assert.False(r.TimedOut, $"lm {string.Join(' ', args)} did not finish");
        return r;
    }

    [Fact]
    public void RunRecordsAndReplaysOnlyAgainstTheSameImage()
    {
        string dir = Directory.CreateTempSubdirectory("lm-drive-").FullName;
        try
        {
            string disk = Path.Combine(dir, "disk.img"), orig = Path.Combine(dir, "disk.orig"), trace = Path.Combine(dir, "t.lmtrace");
            var image = Differential.BlkQemuDifferentialTests.TestImage();
            File.WriteAllBytes(disk, image);
            File.WriteAllBytes(orig, image);

            var run = Lm("run", Repo.Guest("blk"), "--drive", disk, "--record", trace);
            Assert.Equal(0, run.ExitCode);
            string output = Encoding.ASCII.GetString(run.Stdout);
            Assert.Contains("blk: done", output);
            Assert.NotEqual(image, File.ReadAllBytes(disk)); // flushed into the file

            var replay = Lm("replay", trace, "--drive", orig);
            Assert.Equal(0, replay.ExitCode);
            Assert.Equal(output, Encoding.ASCII.GetString(replay.Stdout));
            Assert.Equal(image, File.ReadAllBytes(orig)); // a replay never writes the image

            var wrong = Lm("replay", trace, "--drive", disk);
            Assert.NotEqual(0, wrong.ExitCode);
            Assert.Contains("the trace was recorded on image", wrong.Stderr);
            Assert.Single(wrong.Stderr.Trim().Split('\n'));

            var ro = Lm("run", Repo.Guest("blk"), "--drive", orig + ",readonly");
            Assert.NotEqual(0, ro.ExitCode); // the workload's first write fails with IOERR
            Assert.Contains("blk: write failed, status 1", Encoding.ASCII.GetString(ro.Stdout));
            Assert.Equal(image, File.ReadAllBytes(orig));
        }
        finally { Directory.Delete(dir, true); }
    }

    [Theory]
    [InlineData("missing.img", "does not exist")]
    [InlineData("short.img", "not a multiple of 4 KiB")]
    [InlineData("short.img,bogus", "unknown option 'bogus'")]
    public void BadDrivesFailInOneLine(string drive, string message)
    {
        string dir = Directory.CreateTempSubdirectory("lm-drive-").FullName;
        try
        {
            File.WriteAllBytes(Path.Combine(dir, "short.img"), new byte[1000]);
            var r = Lm("run", Repo.Guest("hello"), "--drive", Path.Combine(dir, drive));
            Assert.NotEqual(0, r.ExitCode);
            Assert.Contains(message, r.Stderr);
            Assert.Single(r.Stderr.Trim().Split('\n'));
        }
        finally { Directory.Delete(dir, true); }
    }
}
