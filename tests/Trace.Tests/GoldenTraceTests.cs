using LiveMigration.Guest;
using System.Text;
using LiveMigration.Recorder;
using LiveMigration.Replayer;

namespace LiveMigration.Trace.Tests;

/// <summary>
/// Golden traces in traces/ pin the format: re-recording each guest in the scripted world must give
/// the same bytes and the same dump, and every committed trace (including the previous format
/// version's) must still replay faithfully.
/// </summary>
public class GoldenTraceTests
{
    public sealed record Golden(string Name, string Guest, string? Input, ulong CheckpointInterval, uint Version);

    public static readonly Golden[] All =
    [
        new("hello", "hello", null, 0, TraceFormat.CurrentVersion),
        new("compute_small", "compute_small", null, 1 << 21, TraceFormat.CurrentVersion),
        new("idle", "idle", null, 0, TraceFormat.CurrentVersion),
        new("kv", "kv", RecordReplayTests.KvScript, 0, TraceFormat.CurrentVersion),
        new("dirty_small", "dirty_small", null, 0, TraceFormat.CurrentVersion),
        // Written by the version-1 writer and kept: it must replay after every later version bump.
        new("idle.v1", "idle", null, 0, 1),
        // The last version before disk events (v3): same guest, version-2 writer.
        new("idle.v2", "idle", null, 0, 2),
    ];

    public static TheoryData<string> Names => new(All.Select(g => g.Name));

    private static Recording RecordGolden(Golden g) => Record.Guest(g.Guest, g.Input == null ? null : Encoding.ASCII.GetBytes(g.Input),
        new RecorderOptions { DigestInterval = 1 << 20, CheckpointInterval = g.CheckpointInterval, FlushInterval = null },
        writerOptions: new TraceWriterOptions { FormatVersion = g.Version });

    private static string DumpText(byte[] trace)
    {
        using var file = TraceFile.Open(new MemoryStream(trace));
        var sw = new StringWriter { NewLine = "\n" };
        TraceInspector.Dump(file, sw);
        return sw.ToString();
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void Recording_matches_golden_trace_and_dump(string name)
    {
        var g = All.Single(x => x.Name == name);
        var rec = RecordGolden(g);
        Snapshot.Match(name + ".dump.txt", Encoding.UTF8.GetBytes(DumpText(rec.Trace)));
        Snapshot.Match(name + ".lmtrace", rec.Trace);
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void Golden_trace_replays_faithfully(string name)
    {
        byte[] trace = File.ReadAllBytes(Path.Combine(Repo.Traces, name + ".lmtrace"));
        var g = All.Single(x => x.Name == name);
        using (var file = TraceFile.Open(new MemoryStream(trace))) Assert.Equal(g.Version, file.FormatVersion);
        var replay = Record.Replay(trace);
        Assert.Null(replay.Divergence);
        Assert.Equal(ReplayStatus.Finished, replay.Status);
        Assert.Contains(g.Guest == "idle" ? "tick 3" : g.Guest == "kv" ? "BYE" : g.Guest == "hello" ? "Hello" : "checksum", Encoding.ASCII.GetString(replay.Output));
    }

    [Fact]
    public void Trace_with_a_version_2_cpu_checkpoint_is_refused_by_its_digest_version_not_misread()
    {
        // Recorded before the hart had privilege modes (CPU state v2) and before digest version 3: its CPU
        // section still parses, and what refuses it is the digest of another version, said in one line.
        var e = Assert.Throws<InvalidDataException>(() => Record.Replay(File.ReadAllBytes(Path.Combine(Repo.Traces, "hello.cpu2.lmtrace"))));
        Assert.Contains($"made before digest version {Machine.DigestVersion}", e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void Version_1_trace_has_no_version_2_fields_and_reads()
    {
        byte[] trace = File.ReadAllBytes(Path.Combine(Repo.Traces, "idle.v1.lmtrace"));
        using var file = TraceFile.Open(new MemoryStream(trace));
        Assert.Equal(1u, file.Header.FormatVersion);
        Assert.Equal(0ul, file.Header.DigestInterval); // v2 field absent in v1
        using var v2 = TraceFile.Open(new MemoryStream(File.ReadAllBytes(Path.Combine(Repo.Traces, "idle.lmtrace"))));
        Assert.Equal(TraceFormat.CurrentVersion, v2.Header.FormatVersion);
        Assert.Equal(1ul << 20, v2.Header.DigestInterval);
    }
}
