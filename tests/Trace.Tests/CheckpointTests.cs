using LiveMigration.Guest;
using LiveMigration.Guest.Loader;
using LiveMigration.Recorder;
using LiveMigration.Replayer;

namespace LiveMigration.Trace.Tests;

/// <summary>rr's checkpoint_test: resuming from checkpoints at a seeded random stride ends exactly where an uninterrupted replay does.</summary>
public class CheckpointTests
{
    [Theory]
    [InlineData("compute_small", 1)]
    [InlineData("dirty_small", 2)]
    [InlineData("idle", 3)]
    [InlineData("kv", 4)]
    public void Replay_from_in_trace_checkpoints_matches_uninterrupted(string guest, int seed)
    {
        byte[]? input = guest == "kv" ? System.Text.Encoding.ASCII.GetBytes(RecordReplayTests.KvScript) : null;
        var rec = Record.Guest(guest, input, new RecorderOptions { DigestInterval = 1 << 15, CheckpointInterval = 1 << 16, FlushInterval = null });
        var full = Record.Replay(rec.Trace);
        Assert.Equal(ReplayStatus.Finished, full.Status);
        Assert.Equal(rec.FinalDigest, full.Digest);

        using var file = TraceFile.Open(new MemoryStream(rec.Trace));
        var checkpoints = file.CheckpointFrames.Select(f => f.FirstIcount).ToList();
        if (guest != "idle") Assert.True(checkpoints.Count >= 2, $"expected several checkpoints, got {checkpoints.Count}");
        var rng = new Random(seed);
        for (ulong at = 0; at <= rec.Icount; at += (ulong)rng.NextInt64(1, 1 << 18))
        {
            var part = Record.Replay(rec.Trace, startAt: at);
            Assert.Null(part.Divergence);
            Assert.Equal(ReplayStatus.Finished, part.Status);
            Assert.Equal(rec.FinalDigest, part.Digest);
            Assert.EndsWith(Convert.ToHexString(part.Output), Convert.ToHexString(full.Output));
        }
    }

    [Theory]
    [InlineData("compute_small", 11)]
    [InlineData("idle", 12)]
    [InlineData("kv", 13)]
    public void Stop_save_resume_at_random_icounts_matches_uninterrupted(string guest, int seed)
    {
        byte[]? input = guest == "kv" ? System.Text.Encoding.ASCII.GetBytes(RecordReplayTests.KvScript) : null;
        var rec = Record.Guest(guest, input);
        var full = Record.Replay(rec.Trace);
        var rng = new Random(seed);
        for (int i = 0; i < 6; i++)
        {
            ulong until = (ulong)rng.NextInt64(0, (long)rec.Icount);
            using var file = TraceFile.Open(new MemoryStream(rec.Trace));
            var head = new MemoryStream();
            byte[] checkpoint;
            using (var s = ReplaySession.OpenFile(file, new ReplayOptions { Output = head.WriteByte }))
            {
                Assert.Equal(ReplayStatus.ReachedUntil, s.Run(until));
                Assert.Equal(until, s.Machine.Icount);
                checkpoint = s.SaveCheckpoint();
            }
            var tail = new MemoryStream();
            using var resumed = ReplaySession.OpenFile(file, new ReplayOptions { Output = tail.WriteByte }, checkpoint);
            Assert.Equal(ReplayStatus.Finished, resumed.Run());
            Assert.Null(resumed.Divergence);
            Assert.Equal(rec.FinalDigest, resumed.Machine.ComputeDigest());
            Assert.Equal(full.Output, head.ToArray().Concat(tail.ToArray()).ToArray());
        }
    }

    [Fact]
    public void Background_checkpoints_write_the_same_trace_as_synchronous_ones()
    {
        var options = new RecorderOptions { DigestInterval = 1 << 18, CheckpointInterval = 1 << 19, FlushInterval = null };
        var background = Record.Guest("dirty_small", options: options with { BackgroundCheckpoints = true }, writerOptions: new TraceWriterOptions { ChunkSize = 64 });
        var inline = Record.Guest("dirty_small", options: options with { BackgroundCheckpoints = false }, writerOptions: new TraceWriterOptions { ChunkSize = 64 });
        using var file = TraceFile.Open(new MemoryStream(background.Trace));
        Assert.True(file.CheckpointFrames.Count() >= 3);
        Assert.Equal(inline.Trace, background.Trace);
        TraceInspector.Verify(new MemoryStream(background.Trace));
    }

    [Fact]
    public void Checkpoint_file_round_trips_and_skips_zero_pages()
    {
        byte[] image = File.ReadAllBytes(Repo.Guest("dirty_small"));
        using var m = new Machine(new MachineConfig(), new ScriptedHostPort());
        ElfLoader.Load(m, image);
        m.Run(3_000_000);
        byte[] file = CheckpointFile.Create(m);
        var info = CheckpointFile.ReadInfo(file);
        Assert.Equal(m.Icount, info.Icount);
        Assert.Equal(m.ComputeDigest(), info.Digest);
        Assert.True(file.Length < 2 << 20, $"a 128 MiB machine with a 256 KiB working set checkpoints to {file.Length} bytes");

        using var copy = CheckpointFile.Load(file, new ScriptedHostPort(icountBase: info.Icount, timeBase: m.Clint.Time));
        Assert.Equal(m.ComputeDigest(), copy.ComputeDigest());
        // Both continue identically from the checkpoint.
        m.HostPort = new ScriptedHostPort(icountBase: info.Icount, timeBase: m.Clint.Time);
        Assert.Equal(StopReason.Exited, m.Run());
        Assert.Equal(StopReason.Exited, copy.Run());
        Assert.Equal(m.ComputeDigest(), copy.ComputeDigest());
    }

    [Fact]
    public void Corrupt_checkpoint_files_are_refused_with_an_offset()
    {
        using var m = new Machine(new MachineConfig(), new ScriptedHostPort());
        ElfLoader.Load(m, File.ReadAllBytes(Repo.Guest("hello")));
        byte[] file = CheckpointFile.Create(m);
        var rng = new Random(5);
        for (int i = 0; i < 200; i++)
        {
            byte[] bad = (byte[])file.Clone();
            int at = rng.Next(bad.Length);
            bad[at] ^= (byte)(1 << rng.Next(8));
            using var target = new Machine(new MachineConfig(), new ScriptedHostPort());
            var e = Assert.ThrowsAny<TraceFormatException>(() => CheckpointFile.Restore(target, bad));
            Assert.InRange(e.Offset, 0, bad.Length);
        }
        using var t2 = new Machine(new MachineConfig(), new ScriptedHostPort());
        Assert.Throws<TraceTruncatedException>(() => CheckpointFile.Restore(t2, file.AsSpan(0, file.Length - 1)));
    }
}
