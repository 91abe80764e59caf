using System.Diagnostics;
using FsCheck;
using FsCheck.Fluent;
using LiveMigration.Guest;
using LiveMigration.Guest.State;

namespace LiveMigration.Trace.Tests;

/// <summary>
/// Random and mutated checkpoints, traces and log chunks fed to the decoders (issue 14, "fuzzing as
/// tests"). Whatever the bytes, a decoder either accepts them or throws the format's own exception
/// (<see cref="TraceFormatException"/> or <see cref="InvalidDataException"/>); it never hangs and
/// never allocates far beyond what the input justifies. Bounded in count (seeded, reproducible).
/// </summary>
public class DecoderFuzzTests
{
    private static readonly Config Runs = Config.QuickThrowOnFailure.WithMaxTest(150);

    /// <summary>Managed bytes a decode may allocate: machines of the checkpoints' 1 MiB plus their state, with room.</summary>
    private const long AllocationBound = 64 << 20;

    private static readonly Lazy<byte[]> State = new(() =>
    {
        using var m = new Machine(new MachineConfig { MemorySize = 1 << 20 }, NullHostPort.Instance);
        m.Memory.Write(m.Memory.Base + 0x3000, [1, 2, 3, 4]);
        m.Memory.Write(m.Memory.Base + 0x9000, [5]);
        m.Uart.Write(2, 1, 1);
        m.DeliverSerialInput("fuzz"u8);
        m.Balloon.ReportFree(100, 5);
        var w = new StateWriter();
        m.SaveState(w);
        return w.ToArray();
    });

    private static readonly Lazy<byte[]> Hello = new(() => File.ReadAllBytes(Path.Combine(Repo.Traces, "hello.lmtrace")));

    private static Gen<(int Seed, int Mutations)> Mutation(int most) =>
        from seed in Gen.Choose(0, int.MaxValue)
        from n in Gen.Choose(1, most)
        select (seed, n);

    /// <summary>Flips, overwrites, cuts and splices; reproducible from the seed.</summary>
    private static byte[] Mutate(byte[] original, int seed, int mutations)
    {
        var rng = new Random(seed);
        var b = (byte[])original.Clone();
        for (int i = 0; i < mutations && b.Length > 0; i++)
        {
            int at = rng.Next(b.Length);
            switch (rng.Next(5))
            {
                case 0: b[at] ^= (byte)(1 << rng.Next(8)); break;
                case 1: b[at] = (byte)rng.Next(256); break;
                case 2: b[at] = rng.Next(2) == 0 ? (byte)0 : (byte)0xFF; break;
                case 3: b = b[..at]; break;
                case 4:
                    int len = Math.Min(rng.Next(1, 64), b.Length - at);
                    int to = rng.Next(b.Length - len + 1);
                    Array.Copy(b, at, b, to, len);
                    break;
            }
        }
        return b;
    }

    /// <summary>Runs the decode on its own thread: only the format's exceptions, in bounded time and memory.</summary>
    private static bool Survives(string what, Action decode)
    {
        Exception? failure = null;
        long allocated = 0;
        var thread = new Thread(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            try { decode(); }
            catch (Exception e) when (e is TraceFormatException or InvalidDataException) { }
            catch (Exception e) { failure = e; }
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        });
        var sw = Stopwatch.StartNew();
        thread.Start();
        Assert.True(thread.Join(TimeSpan.FromSeconds(30)), $"{what}: the decoder hung");
        Assert.True(failure == null, $"{what}: {failure?.GetType().Name}: {failure?.Message}\n{failure?.StackTrace}");
        Assert.True(allocated < AllocationBound, $"{what}: allocated {allocated} bytes");
        return true;
    }

    [Fact]
    public void Mutated_checkpoint_files_are_accepted_or_refused_cleanly()
    {
        byte[] file = CraftedFileTests.Forge(State.Value, 1 << 20);
        Prop.ForAll(Mutation(6).ToArbitrary(), m =>
            Survives($"checkpoint seed {m.Seed}", () => CheckpointFile.Load(Mutate(file, m.Seed, m.Mutations), NullHostPort.Instance, false).Dispose()))
            .Check(Runs);
    }

    [Fact]
    public void Mutated_states_behind_valid_checksums_are_accepted_or_refused_cleanly()
    {
        // The checksums are recomputed, so every mutation reaches the state parser and the restores.
        Prop.ForAll(Mutation(4).ToArbitrary(), m =>
            Survives($"state seed {m.Seed}", () =>
            {
                byte[] forged = CraftedFileTests.Forge(Mutate(State.Value, m.Seed, m.Mutations), 1 << 20);
                CheckpointFile.Load(forged, NullHostPort.Instance, false).Dispose();
            }))
            .Check(Runs);
    }

    [Fact]
    public void Mutated_checkpoint_headers_with_valid_checksums_are_refused_cleanly()
    {
        byte[] file = CraftedFileTests.Forge(State.Value, 1 << 20);
        var fields = Gen.Elements(16, 24, 32, 40, 48);
        var values = Gen.Elements(0UL, 1UL, 3UL, 4097UL, 1UL << 20, 1UL << 40, 1UL << 60, ulong.MaxValue, 60UL << 30, (ulong)int.MaxValue);
        Prop.ForAll((from f in fields from v in values select (f, v)).ToArbitrary(), c =>
            Survives($"header field {c.f} = {c.v}", () => CheckpointFile.Load(CraftedFileTests.Reseal(file, c.f, c.v), NullHostPort.Instance, false).Dispose()))
            .Check(Runs);
    }

    [Fact]
    public void Random_bytes_as_a_checkpoint_or_trace_are_refused_cleanly()
    {
        var gen = from seed in Gen.Choose(0, int.MaxValue) from len in Gen.Choose(0, 4096) select (seed, len);
        Prop.ForAll(gen.ToArbitrary(), c =>
        {
            var bytes = new byte[c.len];
            new Random(c.seed).NextBytes(bytes);
            // With the right magic in front, the bytes get past the first check.
            var asCheckpoint = (byte[])bytes.Clone();
            var asTrace = (byte[])bytes.Clone();
            if (bytes.Length >= 8 && c.seed % 2 == 0)
            {
                "LMCKPT\0\0"u8.CopyTo(asCheckpoint);
                TraceFormat.Magic.CopyTo(asTrace);
            }
            return Survives($"random {c.len} bytes, seed {c.seed}", () =>
            {
                Xunit.Record.Exception(() => CheckpointFile.Load(asCheckpoint, NullHostPort.Instance, false).Dispose()).Rethrow();
                TraceInspector.Verify(new MemoryStream(asTrace));
            });
        }).Check(Runs);
    }

    [Fact]
    public void Mutated_traces_verify_open_and_replay_cleanly()
    {
        Prop.ForAll(Mutation(4).ToArbitrary(), m =>
        {
            byte[] bad = Mutate(Hello.Value, m.Seed, m.Mutations);
            return Survives($"trace seed {m.Seed}", () =>
            {
                Xunit.Record.Exception(() => TraceInspector.Verify(new MemoryStream(bad))).Rethrow();
                using var file = TraceFile.Open(new MemoryStream(bad));
                using var s = Replayer.ReplaySession.OpenFile(file, new Replayer.ReplayOptions());
                s.Run();
            });
        }).Check(Config.QuickThrowOnFailure.WithMaxTest(60));
    }

    [Fact]
    public void Mutated_log_chunks_decode_or_are_refused_cleanly()
    {
        using var w = new EventChunkWriter(64);
        ulong icount = 10;
        for (int i = 0; i < 200; i++)
        {
            icount += (ulong)(i % 7) * 1000;
            switch (i % 5)
            {
                case 0: w.TimeDelivered(icount, (ulong)i * 100_000); break;
                case 1: w.TimeRead(icount, (ulong)i * 100_001); break;
                case 2: w.SerialInput(icount, "SET a 1\n"u8); break;
                case 3: w.Entropy(icount, (ushort)i); break;
                case 4: w.StateDigest(icount, (ulong)i * 0x9E37_79B9); break;
            }
        }
        byte[] chunk = w.Payload.ToArray();
        Prop.ForAll(Mutation(8).ToArbitrary(), m =>
            Survives($"chunk seed {m.Seed}", () =>
            {
                var r = new EventChunkReader(Mutate(chunk, m.Seed, m.Mutations), 10, 0);
                while (r.TryRead(out _)) { }
            })).Check(Runs);
    }

    [Fact]
    public void Mutated_streams_into_the_push_reader_are_refused_cleanly()
    {
        // The destination's reader takes bytes as they arrive from the network, in any split.
        Prop.ForAll(Mutation(4).ToArbitrary(), m =>
        {
            byte[] bad = Mutate(Hello.Value, m.Seed, m.Mutations);
            return Survives($"stream seed {m.Seed}", () =>
            {
                var reader = new TraceStreamReader();
                var rng = new Random(m.Seed);
                for (int at = 0; at < bad.Length;)
                {
                    int n = Math.Min(rng.Next(1, 5000), bad.Length - at);
                    reader.Append(bad.AsSpan(at, n));
                    while (reader.TryReadFrame(out _) == StreamReadStatus.Frame) { }
                    at += n;
                }
                reader.CompleteInput();
                reader.TryReadFrame(out _);
            });
        }).Check(Runs);
    }
}

internal static class ExceptionRethrow
{
    /// <summary>Lets a format exception caught by Record.Exception go on to the next decoder; anything else is rethrown.</summary>
    public static void Rethrow(this Exception? e)
    {
        if (e is null or TraceFormatException or InvalidDataException) return;
        System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e).Throw();
    }
}
