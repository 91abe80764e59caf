using FsCheck;
using FsCheck.Fluent;
using Google.Protobuf;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Trace;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests.Security;

/// <summary>
/// Property-based fuzzing of a live host over loopback: random bytes, mutated frames, random
/// control requests and random migration streams. After every case the host closes the connection
/// in bounded time, still answers status, and its one guest is untouched; over the whole run the
/// process's memory and threads stay bounded. Each case is built from a seed FsCheck draws, so a
/// failure names the seed that reproduces it.
/// </summary>
public sealed class FuzzTests(ITestOutputHelper output) : IDisposable
{
    private readonly TargetHost _t = new(null, o => o with { ReadTimeout = TimeSpan.FromSeconds(2), HandshakeTimeout = TimeSpan.FromSeconds(2), IdleTimeout = TimeSpan.FromSeconds(5) });
    private readonly Envelope[] _valid =
    [
        Transport.Connection.HelloMessage(Purpose.Control),
        new() { StatusRequest = new StatusRequest() },
        new() { StopGuest = new StopGuest { Name = "nobody" } },
        new() { Cancel = new CancelMigration { Name = "nobody" } },
        new() { Resolve = new Resolve { Name = "nobody", Decision = Decision.Go } },
        new() { GoQuery = new GoQuery { MigrationId = "x" } },
        new() { StartGuest = new StartGuest { Name = "fuzzed", Elf = ByteString.CopyFrom(new byte[64]), MemorySize = 16 << 20 } },
    ];

    private static Config Cases(int count) => Config.QuickThrowOnFailure.WithMaxTest(count);

    private void Run(int count, Action<Random> body)
    {
        using (var c = HostClient.Connect(_t.Address)) c.Start("g", Guests.Elf("idle_forever"), 16 << 20, "idle_forever");
        var g = _t.Host.FindInstance("g")!;
        long rss = ProcessFigures.Rss;
        int threads = ProcessFigures.Threads;
        var started = DateTime.UtcNow;
        Check.One(Cases(count), Prop.ForAll(Arb.From(Gen.Choose(0, int.MaxValue)), seed =>
        {
            body(new Random(seed));
            // The host still serves, holds only its guest, and the guest runs on.
            Hosts.WaitUntil(() => _t.Status().Guests.Select(i => i.Name).SequenceEqual(["g"]), 10000, $"the host to drop what seed {seed} left");
            return _t.Host.FindInstance("g") == g && g.State == GuestStatus.Running;
        }));
        Hosts.WaitUntil(() => ProcessFigures.Threads <= threads + 8, 10000, "threads to return");
        long grown = ProcessFigures.Rss - rss;
        output.WriteLine($"{count} cases in {(DateTime.UtcNow - started).TotalSeconds:F1} s; RSS {rss >> 20} -> {ProcessFigures.Rss >> 20} MiB, threads {threads} -> {ProcessFigures.Threads}");
        Assert.True(grown < 400L << 20, $"RSS grew by {grown >> 20} MiB");
        Assert.Empty(_t.LogLines.Where(l => l.Contains("internal error")));
    }

    /// <summary>Sends, ends our side, and requires the host to close within the timeout (no hang).</summary>
    private void Deliver(byte[] bytes, int timeoutMs = 8000)
    {
        using var peer = new RawPeer(_t.Address, timeoutMs);
        try { peer.Write(bytes); }
        catch (IOException) { return; } // the host already refused and closed: fine
        peer.Finish();
        Assert.True(peer.WaitClosed(), "the host kept a finished connection open");
    }

    private static byte[] Bytes(Random r, int max)
    {
        var b = new byte[r.Next(max + 1)];
        r.NextBytes(b);
        return b;
    }

    [Fact]
    public void Random_bytes()
    {
        Run(60, r =>
        {
            var bytes = Bytes(r, 3000);
            if (r.Next(2) == 0 && bytes.Length >= 4) BitConverter.GetBytes(Frame.Magic).CopyTo(bytes, 0); // past the magic, into the header
            Deliver(bytes);
        });
    }

    [Fact]
    public void Mutated_control_frames()
    {
        Run(80, r =>
        {
            var stream = new List<byte>(RawPeer.FrameBytes(_valid[0]));
            for (int i = r.Next(1, 5); i > 0; i--) stream.AddRange(RawPeer.FrameBytes(_valid[r.Next(1, _valid.Length)]));
            var bytes = stream.ToArray();
            switch (r.Next(4))
            {
                case 0: for (int i = r.Next(1, 8); i > 0; i--) bytes[r.Next(bytes.Length)] ^= (byte)(1 << r.Next(8)); break;
                case 1: bytes = bytes[..r.Next(bytes.Length)]; break;
                case 2: BitConverter.GetBytes((uint)r.Next()).CopyTo(bytes, 8); break; // the first frame's length
                default: bytes = [.. bytes, .. Bytes(r, 200)]; break;
            }
            Deliver(bytes);
        });
    }

    [Fact]
    public void Random_control_requests()
    {
        Run(80, r =>
        {
            var stream = new List<byte>(RawPeer.FrameBytes(_valid[0]));
            for (int i = r.Next(1, 4); i > 0; i--) stream.AddRange(RawPeer.FrameBytes(RandomControl(r)));
            Deliver(stream.ToArray());
        });
    }

    [Fact]
    public void Random_migration_streams()
    {
        Run(60, r =>
        {
            var stream = new List<byte>(RawPeer.FrameBytes(Transport.Connection.HelloMessage(Purpose.Migrate)));
            if (r.Next(5) != 0) stream.AddRange(RawPeer.FrameBytes(HostileStreamTests.Setup($"in{r.Next(3)}")));
            for (int i = r.Next(1, 6); i > 0; i--) stream.AddRange(RawPeer.FrameBytes(RandomMigrationMessage(r)));
            Deliver(stream.ToArray());
        });
    }

    private static string Name(Random r) => r.Next(4) switch
    {
        0 => "",
        1 => Convert.ToBase64String(Bytes(r, 80)),
        2 => new string((char)r.Next(0, 0x3000), r.Next(1, 100)),
        _ => $"n{r.Next(100)}",
    };

    private static Envelope RandomControl(Random r) => r.Next(7) switch
    {
        0 => new() { StatusRequest = new StatusRequest { Name = Name(r) } },
        1 => new() { StopGuest = new StopGuest { Name = Name(r) } },
        2 => new() { Cancel = new CancelMigration { Name = Name(r) } },
        3 => new() { Resolve = new Resolve { Name = Name(r), Decision = (Decision)r.Next(-2, 8) } /* unknown numbers too */ },
        4 => new() { GoQuery = new GoQuery { MigrationId = Name(r) } },
        5 => new() { StartGuest = new StartGuest { Name = Name(r), Elf = ByteString.CopyFrom(Bytes(r, 4000)), MemorySize = (ulong)r.NextInt64() >> r.Next(64), ImageName = Name(r) } },
        _ => new() { Pages = new PageBatch { Pages = { (uint)r.Next() }, Zstd = ByteString.CopyFrom(Bytes(r, 100)) } },
    };

    private static Envelope RandomMigrationMessage(Random r)
    {
        uint Page() => r.Next(3) == 0 ? (uint)r.Next() : (uint)r.Next(4096);
        return r.Next(11) switch
        {
            0 => new() { Pages = new PageBatch { Pages = { Enumerable.Range(0, r.Next(0, 300)).Select(_ => Page()) }, Zstd = ByteString.CopyFrom(Bytes(r, 2000)) } },
            1 => new() { ZeroPages = new ZeroPages { First = { Page(), Page() }, Count = { (uint)r.Next(5000), (uint)r.Next(2) } } },
            2 => new() { DeltaPages = new DeltaPages { Pages = { Page() }, Kinds = ByteString.CopyFrom((byte)r.Next(7)), Lengths = { (uint)r.Next(9000) }, RawLength = (uint)r.Next(9000), Zstd = ByteString.CopyFrom(Bytes(r, 500)) } },
            3 => new() { Log = new LogChunk { Frame = ByteString.CopyFrom(RandomTraceFrame(r)), EndIcount = (ulong)r.NextInt64() } },
            4 => new() { CheckpointDone = new CheckpointDone { Icount = (ulong)r.Next(), DeviceState = ByteString.CopyFrom(Bytes(r, 3000)), Digest = (ulong)r.NextInt64() } },
            5 => new() { FinalState = new FinalState { Icount = (ulong)r.Next(), DeviceState = ByteString.CopyFrom(Bytes(r, 3000)), Digest = (ulong)r.NextInt64(), ConsoleInput = ByteString.CopyFrom(Bytes(r, 100)) } },
            6 => new() { PostcopyManifest = new PostcopyManifest { Pages = { Page() }, RunFirst = { Page() }, RunCount = { (uint)r.Next(10000) } } },
            7 => new() { Go = new Go { ConsoleInput = ByteString.CopyFrom(Bytes(r, 100)) } },
            8 => new() { PrecopyFallback = new PrecopyFallback { C0Icount = (ulong)r.Next() } },
            9 => new() { Abort = new Abort { Reason = Name(r) } },
            _ => HostileStreamTests.Setup(Name(r), (ulong)r.NextInt64() >> r.Next(64)),
        };
    }

    /// <summary>A trace frame with a consistent header and a valid checksum over random payload: the decoders must cope with what is inside.</summary>
    private static byte[] RandomTraceFrame(Random r)
    {
        var payload = Bytes(r, 600);
        if (r.Next(4) == 0) return Bytes(r, 100); // or plain garbage
        var frame = new byte[TraceFormat.FrameHeaderSize + payload.Length];
        var header = new FrameHeader((FrameKind)r.Next(1, 7), 0, payload.Length, payload.Length, (ulong)r.Next(1000), (ulong)r.Next(1000, 100000), 0, (ushort)r.Next(3));
        header.Write(frame);
        ulong sum = FrameHeader.ComputeChecksum(frame, payload);
        header = header with { Checksum = sum };
        header.Write(frame);
        payload.CopyTo(frame, TraceFormat.FrameHeaderSize);
        return frame;
    }

    public void Dispose() => _t.Dispose();
}
