using System.Buffers.Binary;
using System.Diagnostics;
using System.IO.Hashing;
using LiveMigration.Guest;
using LiveMigration.Trace.Compression;

namespace LiveMigration.Trace.Tests;

/// <summary>
/// Checkpoints and traces forged with valid checksums (issue 14, "Crafted files crash the CLI"): every
/// one is a format error with one line and exit 2, and `lm trace verify` refuses what `replay` would.
/// </summary>
public class CraftedFileTests
{
    private static byte[] RealCheckpoint()
    {
        using var m = new Machine(new MachineConfig { MemorySize = 1 << 20 }, NullHostPort.Instance);
        m.Memory.Write(m.Memory.Base + 0x2000, [1, 2, 3]);
        return CheckpointFile.Create(m);
    }

    /// <summary>Rewrites a u64 header field and recomputes the header checksum, as a forger would.</summary>
    internal static byte[] Reseal(byte[] file, int field, ulong value)
    {
        var f = (byte[])file.Clone();
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(field), value);
        BinaryPrimitives.WriteUInt64LittleEndian(f.AsSpan(56), XxHash3.HashToUInt64(f.AsSpan(0, 56)));
        return f;
    }

    /// <summary>A checkpoint file (FORMAT.md layout) around arbitrary raw state bytes, every checksum valid.</summary>
    internal static byte[] Forge(ReadOnlySpan<byte> state, ulong memorySize, ulong icount = 0, ulong digest = 0) =>
        CheckpointFile.Encode(state, icount, digest, memorySize);

    public static TheoryData<string> Cases => new(Crafted.Keys);

    private static readonly Dictionary<string, Func<byte[]>> Crafted = new()
    {
        ["memory 0"] = () => Reseal(RealCheckpoint(), 32, 0),
        ["memory 4097"] = () => Reseal(RealCheckpoint(), 32, 4097),
        ["memory 1 TiB"] = () => Reseal(RealCheckpoint(), 32, 1UL << 40),
        ["memory 2^60"] = () => Reseal(RealCheckpoint(), 32, 1UL << 60),
        ["memory 2 MiB, state 1 MiB"] = () => Reseal(RealCheckpoint(), 32, 2 << 20),
        ["raw length 60 GiB"] = () => Reseal(RealCheckpoint(), 40, 60UL << 30),
        ["raw length 3"] = () => Forge([1, 2, 3], 1 << 20),
        ["raw length 0"] = () => Forge([], 1 << 20),
        ["state of random bytes"] = () => Forge(Enumerable.Range(0, 5000).Select(i => (byte)(i * 13)).ToArray(), 1 << 20),
    };

    [Theory, MemberData(nameof(Cases))]
    public void Crafted_checkpoints_are_format_errors(string name)
    {
        byte[] file = Crafted[name]();
        var e = Xunit.Record.Exception(() => CheckpointFile.Load(file, NullHostPort.Instance).Dispose());
        Assert.True(e is TraceFormatException or InvalidDataException, $"{name}: {e?.GetType().Name ?? "no exception"}: {e?.Message}");
        Assert.DoesNotContain('\n', e!.Message);
    }

    [Fact]
    public void A_checkpoint_whose_digest_does_not_match_leaves_the_target_machine_as_it_was()
    {
        byte[] forged = Reseal(RealCheckpoint(), 24, 0xBAD);
        using var m = new Machine(new MachineConfig { MemorySize = 1 << 20 }, NullHostPort.Instance);
        m.Memory.Write(m.Memory.Base + 0x7000, [7, 7]);
        m.SetRegister(5, 55);
        ulong before = m.ComputeDigest();
        var e = Assert.Throws<InvalidDataException>(() => CheckpointFile.Restore(m, forged));
        Assert.Contains("digest", e.Message);
        Assert.Equal(before, m.ComputeDigest());
        Assert.Equal(55UL, m.GetRegister(5));
        // The genuine checkpoint restores into the same machine.
        CheckpointFile.Restore(m, RealCheckpoint());
        Assert.NotEqual(before, m.ComputeDigest());
    }

    private static (int Code, string Err) Lm(params string[] args)
    {
        var r = CliTests.Lm(args);
        return (r.Code, r.Err);
    }

    private static void AssertOneLineError((int Code, string Err) r, string what)
    {
        Assert.True(r.Code == 2, $"{what}: exit {r.Code}: {r.Err}");
        string err = r.Err.Trim();
        Assert.DoesNotContain("Unhandled", err);
        Assert.DoesNotContain("   at ", err);
        Assert.Single(err.Split('\n'));
        Assert.StartsWith("lm: error: ", err);
    }

    [Fact]
    public void The_cli_refuses_every_crafted_checkpoint_with_one_line_and_exit_2()
    {
        string dir = Directory.CreateTempSubdirectory("lm-crafted").FullName;
        foreach (var (name, make) in Crafted)
        {
            string path = Path.Combine(dir, name.Replace(' ', '_') + ".lmckpt");
            File.WriteAllBytes(path, make());
            AssertOneLineError(Lm("restore", path), name);
        }
    }

    /// <summary>A trace whose header embeds <paramref name="checkpoint"/> (its icount and digest copied into the header).</summary>
    private static byte[] TraceAround(byte[] checkpoint, ulong? memorySize = null)
    {
        using var m = new Machine(new MachineConfig { MemorySize = 1 << 20 }, NullHostPort.Instance);
        var header = TraceHeaders.Create(m, [], "forged", "scripted", 0, 0);
        var info = CheckpointFile.ReadInfo(checkpoint);
        header.InitialCheckpoint = Google.Protobuf.ByteString.CopyFrom(checkpoint);
        header.StartIcount = info.Icount;
        header.StartDigest = info.Digest;
        if (memorySize is { } size) header.Machine.MemorySize = size;
        var ms = new MemoryStream();
        using (var w = new TraceWriter(ms, header)) w.Finish(info.Icount, EndReason.Exited, 0);
        return ms.ToArray();
    }

    [Fact]
    public void Trace_verify_refuses_what_replay_would_trip_on()
    {
        string dir = Directory.CreateTempSubdirectory("lm-crafted").FullName;
        var traces = new Dictionary<string, byte[]>
        {
            // The header's icount/digest match the checkpoint's header; its state is 3 bytes.
            ["3-byte state"] = TraceAround(Forge([1, 2, 3], 1 << 20)),
            // The checkpoint's digest field does not match its state.
            ["wrong digest"] = TraceAround(Reseal(RealCheckpoint(), 24, 0x1234)),
            // Header and checkpoint disagree on RAM.
            ["header 2 MiB"] = TraceAround(RealCheckpoint(), 2 << 20),
            ["header 4097 B"] = TraceAround(RealCheckpoint(), 4097),
        };
        foreach (var (name, bytes) in traces)
        {
            var e = Xunit.Record.Exception(() => TraceInspector.Verify(new MemoryStream(bytes)));
            Assert.True(e is TraceFormatException, $"{name}: verify gave {e?.GetType().Name ?? "OK"}");
            string path = Path.Combine(dir, name.Replace(' ', '_') + ".lmtrace");
            File.WriteAllBytes(path, bytes);
            AssertOneLineError(Lm("trace", "verify", path), name + " (verify)");
            AssertOneLineError(Lm("replay", path), name + " (replay)");
        }
        // The same construction around a genuine checkpoint verifies and replays.
        string good = Path.Combine(dir, "good.lmtrace");
        File.WriteAllBytes(good, TraceAround(RealCheckpoint()));
        Assert.Equal(0, Lm("trace", "verify", good).Code);
    }
}
