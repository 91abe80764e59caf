using LiveMigration.Replayer;

namespace LiveMigration.Trace.Tests;

/// <summary>The migration destination's view: trace bytes arrive in pieces; the replay advances as far as they allow.</summary>
public class StreamingTests
{
    [Theory]
    [InlineData("compute_small", 1)]
    [InlineData("idle", 2)]
    [InlineData("kv", 3)]
    public void Replay_fed_in_random_pieces_matches_file_replay(string guest, int seed)
    {
        byte[]? input = guest == "kv" ? System.Text.Encoding.ASCII.GetBytes(RecordReplayTests.KvScript) : null;
        var rec = Record.Guest(guest, input, new Recorder.RecorderOptions { DigestInterval = 1 << 18, FlushInterval = null },
            writerOptions: new TraceWriterOptions { ChunkSize = 256 });
        var full = Record.Replay(rec.Trace);

        var rng = new Random(seed);
        var reader = new TraceStreamReader();
        ReplaySession? session = null;
        var output = new MemoryStream();
        ulong lastIcount = 0;
        int pos = 0, starvedRuns = 0;
        while (pos < rec.Trace.Length)
        {
            int n = Math.Min(rng.Next(1, 120), rec.Trace.Length - pos);
            reader.Append(rec.Trace.AsSpan(pos, n));
            pos += n;
            if (session == null)
            {
                if (reader.TryReadFrame(out var first) != StreamReadStatus.Frame) continue;
                Assert.Equal(FrameKind.Header, first!.Kind);
                session = ReplaySession.FromHeader(reader.Header!, new ReplayOptions { Output = output.WriteByte });
            }
            session.AddFrames(reader);
            var status = session.Run();
            if (pos < rec.Trace.Length && status == ReplayStatus.NeedMoreEvents)
            {
                starvedRuns++;
                Assert.True(session.Machine.Icount <= Math.Max(session.Horizon, session.StartIcount), $"ran to {session.Machine.Icount}, past the horizon {session.Horizon}");
            }
            Assert.True(session.Machine.Icount >= lastIcount);
            lastIcount = session.Machine.Icount;
            if (status == ReplayStatus.Finished) break;
            Assert.Equal(ReplayStatus.NeedMoreEvents, status);
        }
        Assert.NotNull(session);
        Assert.Equal(ReplayStatus.Finished, session!.Run());
        Assert.True(starvedRuns > 0);
        Assert.Equal(full.Output, output.ToArray());
        Assert.Equal(rec.FinalDigest, session.Machine.ComputeDigest());
        session.Dispose();
    }

    [Fact]
    public void Writer_frame_sink_sees_exactly_the_written_bytes()
    {
        var shipped = new MemoryStream();
        var rec = Record.Guest("idle", writerOptions: new TraceWriterOptions
        {
            ChunkSize = 128,
            FrameSink = (_, bytes) => shipped.Write(bytes.Span),
        });
        Assert.Equal(rec.Trace.AsSpan(TraceFormat.Magic.Length).ToArray(), shipped.ToArray());
        var reader = new TraceStreamReader(expectMagic: false);
        reader.Append(shipped.ToArray());
        reader.CompleteInput();
        int frames = 0;
        while (reader.TryReadFrame(out _) == StreamReadStatus.Frame) frames++;
        Assert.True(reader.IsFinished);
        Assert.True(frames > 3);
    }

    [Fact]
    public void Killed_sender_ends_as_truncated_after_replaying_every_whole_frame()
    {
        var rec = Record.Guest("idle", writerOptions: new TraceWriterOptions { ChunkSize = 64 });
        using var file = TraceFile.Open(new MemoryStream(rec.Trace));
        var cut = file.Frames[file.Frames.Count / 2];
        int length = (int)cut.Offset + 10; // inside a frame
        var reader = new TraceStreamReader();
        reader.Append(rec.Trace.AsSpan(0, length));
        Assert.Equal(StreamReadStatus.Frame, reader.TryReadFrame(out _));
        using var session = ReplaySession.FromHeader(reader.Header!, new ReplayOptions());
        session.AddFrames(reader);
        Assert.Equal(ReplayStatus.NeedMoreEvents, session.Run());
        reader.CompleteInput();
        var e = Assert.Throws<TraceTruncatedException>(() => reader.TryReadFrame(out _));
        Assert.Equal(cut.Offset, e.Offset);
        session.CompleteInput();
        Assert.Equal(ReplayStatus.TraceEnded, session.Run());
        Assert.True(session.Machine.Icount >= file.Frames[cut.Position - 1].EndIcount);
    }
}
