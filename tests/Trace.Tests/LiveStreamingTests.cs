using System.Collections.Concurrent;
using LiveMigration.Guest;
using LiveMigration.Guest.Loader;
using LiveMigration.Recorder;
using LiveMigration.Replayer;

namespace LiveMigration.Trace.Tests;

/// <summary>
/// Log shipping in miniature: a source records while a destination, on another thread, decodes the
/// frames as they arrive and replays behind it; both end in the same state.
/// </summary>
public class LiveStreamingTests
{
    [Theory]
    [InlineData("compute_small")]
    [InlineData("kv")]
    [InlineData("idle")]
    public async Task Destination_replays_while_the_source_records(string guest)
    {
        byte[] image = File.ReadAllBytes(Repo.Guest(guest));
        byte[]? input = guest == "kv" ? System.Text.Encoding.ASCII.GetBytes(RecordReplayTests.KvScript) : null;
        var wire = new BlockingCollection<byte[]>();

        // Destination: bytes in, frames out, replay as far as they allow.
        var destOutput = new MemoryStream();
        int needMore = 0;
        var destination = Task.Run(() =>
        {
            var reader = new TraceStreamReader(expectMagic: false);
            ReplaySession? session = null;
            try
            {
                foreach (var piece in wire.GetConsumingEnumerable())
                {
                    reader.Append(piece);
                    if (session == null)
                    {
                        if (reader.TryReadFrame(out _) != StreamReadStatus.Frame) continue;
                        session = ReplaySession.FromHeader(reader.Header!, new ReplayOptions { Output = destOutput.WriteByte });
                    }
                    session.AddFrames(reader);
                    var status = session.Run();
                    if (status == ReplayStatus.NeedMoreEvents) needMore++;
                    else if (status != ReplayStatus.Finished) return (status, 0UL, session.Divergence?.ToString());
                }
                reader.CompleteInput();
                Assert.Equal(StreamReadStatus.Finished, reader.TryReadFrame(out _));
                return (session!.Run(), session.Machine.ComputeDigest(), session.Divergence?.ToString());
            }
            finally { session?.Dispose(); }
        });

        // Source: records with small chunks, every frame goes on the wire as soon as it is written.
        using var machine = new Machine(new MachineConfig(), new ScriptedHostPort());
        ElfLoader.Load(machine, image);
        using var recorder = TraceRecorder.Start(Stream.Null, machine, image, guest, "scripted",
            new RecorderOptions { DigestInterval = 1 << 17, CheckpointInterval = 1 << 20, FlushInterval = null },
            new TraceWriterOptions { ChunkSize = 512, FrameSink = (_, bytes) => wire.Add(bytes.ToArray()) });
        var port = new ScriptedHostPort(input, recorder);
        machine.HostPort = port;
        StopReason reason;
        while ((reason = machine.Run(machine.Icount + 300_000)) == StopReason.InstructionLimit) recorder.RequestFlush();
        recorder.Finish(machine, reason);
        wire.CompleteAdding();

        var (final, digest, divergence) = await destination.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Null(divergence);
        Assert.Equal(ReplayStatus.Finished, final);
        Assert.Equal(machine.ComputeDigest(), digest);
        Assert.Equal(port.Output.ToArray(), destOutput.ToArray());
        Assert.True(needMore > 0, "the destination never had to wait for the source");
    }
}
