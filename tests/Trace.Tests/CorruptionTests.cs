using LiveMigration.Replayer;

namespace LiveMigration.Trace.Tests;

/// <summary>Flipped, truncated and spliced traces: every case ends in a clear error (or, for a clean cut, a truncated replay), never a crash or a hang.</summary>
public class CorruptionTests
{
    private static readonly Lazy<byte[]> Kv = new(() => File.ReadAllBytes(Path.Combine(Repo.Traces, "kv.lmtrace")));
    private static readonly Lazy<byte[]> Compute = new(() => File.ReadAllBytes(Path.Combine(Repo.Traces, "compute_small.lmtrace")));

    public enum Outcome { Faithful, Corrupt, Truncated, Diverged }

    /// <summary>Verifies, then replays the bytes; returns what happened. Anything but our exceptions fails the test.</summary>
    private static Outcome Examine(byte[] bytes, out string message)
    {
        var task = Task.Run(() =>
        {
            bool verified;
            try { TraceInspector.Verify(new MemoryStream(bytes)); verified = true; }
            catch (TraceFormatException) { verified = false; }
            try
            {
                using var file = TraceFile.Open(new MemoryStream(bytes));
                using var s = ReplaySession.OpenFile(file, new ReplayOptions());
                var status = s.Run();
                if (status == ReplayStatus.Diverged) return (Outcome.Diverged, s.Divergence!.ToString());
                if (status == ReplayStatus.TraceEnded || file.Truncation != null) return (Outcome.Truncated, file.Truncation?.Message ?? "ended");
                Assert.Equal(ReplayStatus.Finished, status);
                return (verified ? Outcome.Faithful : Outcome.Corrupt, verified ? "" : "verify failed");
            }
            catch (TraceTruncatedException e) { return (Outcome.Truncated, e.Message); }
            catch (TraceFormatException e) { Assert.InRange(e.Offset, 0, bytes.Length); return (Outcome.Corrupt, e.Message); }
            catch (InvalidDataException e) { return (Outcome.Corrupt, e.Message); }
        });
        Assert.True(task.Wait(TimeSpan.FromSeconds(30)), "replaying a damaged trace hung");
        (var outcome, message) = task.Result;
        return outcome;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Every_bit_flip_is_detected(int seed)
    {
        foreach (var original in new[] { Kv.Value, Compute.Value })
        {
            var rng = new Random(seed);
            for (int i = 0; i < 150; i++)
            {
                byte[] bad = (byte[])original.Clone();
                int at = rng.Next(bad.Length);
                bad[at] ^= (byte)(1 << rng.Next(8));
                var outcome = Examine(bad, out string msg);
                Assert.True(outcome != Outcome.Faithful, $"flip at byte {at} went unnoticed");
            }
        }
    }

    [Fact]
    public void Truncation_at_every_frame_boundary_and_inside_frames_replays_the_prefix()
    {
        var original = Kv.Value;
        using var file = TraceFile.Open(new MemoryStream(original));
        var cuts = file.Frames.SelectMany(f => new[] { f.Offset, f.Offset + 1, f.Offset + 35, f.Offset + 37 }).Append(3).Append(original.Length - 1);
        foreach (long cut in cuts.Where(c => c > 0 && c < original.Length))
        {
            var outcome = Examine(original.AsSpan(0, (int)cut).ToArray(), out string msg);
            Assert.True(outcome is Outcome.Truncated, $"cut at {cut}: {outcome} {msg}");
        }
    }

    [Theory]
    [InlineData(3)]
    [InlineData(4)]
    public void Random_truncation_and_splices_end_in_clear_errors(int seed)
    {
        var rng = new Random(seed);
        var a = Kv.Value;
        var b = Compute.Value;
        for (int i = 0; i < 80; i++)
        {
            int cut = rng.Next(1, a.Length);
            Assert.NotEqual(Outcome.Faithful, Examine(a.AsSpan(0, cut).ToArray(), out _));

            // Drop a random range.
            int from = rng.Next(8, a.Length - 1), to = rng.Next(from + 1, a.Length);
            var dropped = a.AsSpan(0, from).ToArray().Concat(a.AsSpan(to).ToArray()).ToArray();
            Assert.NotEqual(Outcome.Faithful, Examine(dropped, out _));

            // Splice a range of another trace in.
            int bf = rng.Next(8, b.Length - 1), bt = Math.Min(b.Length, bf + rng.Next(1, 4000));
            int at = rng.Next(8, a.Length);
            var spliced = a.AsSpan(0, at).ToArray().Concat(b.AsSpan(bf, bt - bf).ToArray()).Concat(a.AsSpan(at).ToArray()).ToArray();
            Assert.NotEqual(Outcome.Faithful, Examine(spliced, out _));
        }
    }

    [Fact]
    public void Whole_frame_removed_or_duplicated_is_caught_by_sequence_numbers()
    {
        var original = Kv.Value;
        using var file = TraceFile.Open(new MemoryStream(original));
        foreach (var f in file.Frames.Skip(1).Where(f => f.Kind == FrameKind.Events).Take(10))
        {
            int len = TraceFormat.FrameHeaderSize + f.StoredLength;
            var removed = original.AsSpan(0, (int)f.Offset).ToArray().Concat(original.AsSpan((int)f.Offset + len).ToArray()).ToArray();
            var e = Assert.ThrowsAny<TraceFormatException>(() => TraceInspector.Verify(new MemoryStream(removed)));
            Assert.Equal(f.Offset, e.Offset);
            Assert.NotEqual(Outcome.Faithful, Examine(removed, out _));
            var doubled = original.AsSpan(0, (int)f.Offset + len).ToArray().Concat(original.AsSpan((int)f.Offset).ToArray()).ToArray();
            Assert.NotEqual(Outcome.Faithful, Examine(doubled, out _));
        }
    }
}
