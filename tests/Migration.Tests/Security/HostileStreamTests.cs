using Google.Protobuf;
using LiveMigration.Migration.Protocol;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests.Security;

/// <summary>An incoming migration fed hostile messages: refused before anything applies, and discarded completely.</summary>
public sealed class HostileStreamTests(ITestOutputHelper output)
{
    public static Envelope Setup(string name, ulong memory = 16 << 20) => new()
    {
        Setup = new MigrateSetup { MigrationId = $"m-{name}", Name = name, MemorySize = memory, PageCount = (uint)(memory / 4096), Strategy = Strategy.Log, Source = "127.0.0.1:1", ImageName = "x", Machine = Identity(memory) },
    };

    /// <summary>What a real source of this build announces for a machine of that size (the handshake checks it first).</summary>
    private static MachineIdentity Identity(ulong memory)
    {
        // The sections do not depend on the size: a small machine gives them, the size is the announced one (fuzzed too).
        using var m = new Guest.Machine(new Guest.MachineConfig { MemorySize = 1 << 20 }, Guest.NullHostPort.Instance, compileBlocks: false);
        var id = Engine.MachineIdentities.Of(m);
        id.MemorySize = memory;
        id.PageCount = (uint)(memory / 4096);
        return id;
    }

    private static RawPeer Arriving(TargetHost t, string name)
    {
        var peer = new RawPeer(t.Address);
        Assert.True(peer.Hello(Purpose.Migrate).Accepted);
        peer.Send(Setup(name));
        Assert.True(peer.Read().SetupReply.Accepted);
        Assert.Equal(DestinationState.Arriving, t.Status().Guests.Single().Arrival);
        return peer;
    }

    /// <summary>The name is free again, a new migration of it is accepted, and the host logged the discard once.</summary>
    private static void AssertDiscarded(TargetHost t, string name)
    {
        Hosts.WaitUntil(() => t.Status().Guests.Count == 0, what: $"'{name}' to be discarded");
        t.WaitForLog($"discarded incoming '{name}'"); // the line comes once the machine and console are disposed, after the name was freed
        Assert.Single(t.LogLines, l => l.Contains($"discarded incoming '{name}'"));
        using var again = Arriving(t, name);
    }

    [Fact]
    public void A_malformed_log_chunk_discards_the_incoming_migration()
    {
        using var t = new TargetHost(output);
        int threads = ProcessFigures.Threads;
        using (var peer = Arriving(t, "kv"))
        {
            // A trace frame header of the right size with an unknown kind: the trace decoder throws.
            var frame = new byte[36];
            frame[0] = 0xEE;
            peer.Send(new Envelope { Log = new LogChunk { Frame = ByteString.CopyFrom(frame) } });
            Assert.True(peer.WaitClosed());
        }
        var line = t.WaitForLog("discarded incoming 'kv'");
        Assert.Contains("TraceFormatException", line);
        AssertDiscarded(t, "kv");
        Assert.InRange(ProcessFigures.Threads, 0, threads + 6); // the guest thread and console listener went with it
    }

    [Fact]
    public void Out_of_range_pages_are_refused_before_they_apply()
    {
        using var t = new TargetHost(output);
        using (var peer = Arriving(t, "g"))
        {
            var batch = new PageBatch { Zstd = ByteString.CopyFrom(new byte[16]) };
            batch.Pages.Add(4096); // one past the end of 16 MiB
            peer.Send(new Envelope { Pages = batch });
            var abort = peer.Read();
            Assert.Contains("page 4096 is beyond the end of memory", abort.Abort.Reason);
        }
        AssertDiscarded(t, "g");
    }

    [Theory]
    [InlineData("zero-runs")]
    [InlineData("delta-lengths")]
    [InlineData("log-length")]
    [InlineData("manifest")]
    [InlineData("second-setup")]
    public void Inconsistent_messages_are_refused(string kind)
    {
        using var t = new TargetHost(output);
        using (var peer = Arriving(t, "g"))
        {
            var e = kind switch
            {
                "zero-runs" => new Envelope { ZeroPages = new ZeroPages { First = { 4000 }, Count = { 200 } } },
                "delta-lengths" => new Envelope { DeltaPages = new DeltaPages { Pages = { 1, 2 }, Kinds = ByteString.CopyFrom(4, 4), Lengths = { 4096, 4096 }, RawLength = 1 } },
                "log-length" => new Envelope { Log = new LogChunk { Frame = ByteString.CopyFrom(new byte[40]) } },
                "manifest" => new Envelope { PostcopyManifest = new PostcopyManifest { RunFirst = { 1 }, RunCount = { uint.MaxValue } } },
                _ => Setup("other"),
            };
            peer.Send(e);
            Assert.NotEmpty(peer.Read().Abort.Reason);
        }
        AssertDiscarded(t, "g");
    }

    [Fact]
    public void A_source_that_goes_away_frees_the_name_at_once()
    {
        using var t = new TargetHost(output);
        Arriving(t, "g").Dispose();
        AssertDiscarded(t, "g");
    }

    [Theory]
    [InlineData("team/db", 16 << 20, "may contain only")]
    [InlineData("g", 0UL, "memory size 0 is not supported")]
    [InlineData("g", 4097UL, "memory size 4097 is not supported")]
    [InlineData("g", 1UL << 60, "is not supported here")]
    public void A_bad_setup_is_refused_with_its_reason(string name, ulong memory, string why)
    {
        using var t = new TargetHost(output);
        using var peer = new RawPeer(t.Address);
        Assert.True(peer.Hello(Purpose.Migrate).Accepted);
        var setup = Setup(name, memory);
        peer.Send(setup);
        var reply = peer.Read().SetupReply;
        Assert.False(reply.Accepted);
        Assert.Contains(why, reply.Error);
        Assert.Empty(t.Status().Guests);
    }
}
