using System.Text;
using LiveMigration.Guest;
using LiveMigration.Replayer;

namespace LiveMigration.Trace.Tests;

/// <summary>rr's compare_test: record each guest, replay the trace, same output and same final state.</summary>
public class RecordReplayTests
{
    public const string KvScript = "SET a 1\nSET key some value\nGET a\nGET key\nGET nope\nDEL a\nGET a\nSTATS\nQUIT\n";

    public static TheoryData<string> Guests => new() { "hello", "compute_small", "dirty_small", "idle", "traps", "fp_small" };

    [Theory]
    [MemberData(nameof(Guests))]
    public void Replay_matches_recording(string guest)
    {
        var rec = Record.Guest(guest);
        Assert.Equal(StopReason.Exited, rec.Reason);
        Assert.Equal(0, rec.ExitCode);
        var replay = Record.Replay(rec.Trace);
        Assert.Null(replay.Divergence);
        Assert.Equal(ReplayStatus.Finished, replay.Status);
        Assert.Equal(rec.Output, replay.Output);
        Assert.Equal(rec.FinalDigest, replay.Digest);
        Assert.Equal(rec.Icount, replay.Icount);
    }

    [Fact]
    public void Kv_under_serial_input_replays()
    {
        var rec = Record.Guest("kv", Encoding.ASCII.GetBytes(KvScript));
        string output = Encoding.ASCII.GetString(rec.Output);
        Assert.Contains("kv ready", output);
        Assert.Contains("BYE", output);
        Assert.Contains("keys 1 sets 2 gets 4 dels 1", output);
        var replay = Record.Replay(rec.Trace);
        Assert.Equal(ReplayStatus.Finished, replay.Status);
        Assert.Equal(rec.Output, replay.Output);
        Assert.Equal(rec.FinalDigest, replay.Digest);
    }
}
