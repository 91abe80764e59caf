using Google.Protobuf;
using LiveMigration.Guest;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests.Security;

/// <summary>The limits of <see cref="HostOptions"/>: each refused with its reason, the host unharmed.</summary>
public sealed class LimitsTests(ITestOutputHelper output)
{
    [Fact]
    public void A_header_announcing_more_than_its_type_may_carry_is_refused_at_once()
    {
        using var t = new TargetHost(output);
        using var peer = new RawPeer(t.Address);
        Assert.True(peer.Hello(Purpose.Control).Accepted);
        long before = ProcessFigures.Rss;
        // A StatusRequest announcing 64 MiB: refused from the header alone, with the reason.
        peer.Write(RawPeer.FrameBytes(new Envelope { StatusRequest = new StatusRequest() }, length: 64 << 20)[..Frame.HeaderSize]);
        var reply = peer.Read();
        Assert.False(reply.Result.Ok);
        Assert.Contains("StatusRequest message of 67,108,864 bytes exceeds its limit", reply.Result.Error);
        t.WaitForLog("exceeds its limit");
        Assert.True(ProcessFigures.Rss - before < 32 << 20, "no buffer was pinned for the announced size");
        Assert.Empty(t.Status().Guests);
    }

    [Fact]
    public void A_frame_that_stops_arriving_is_dropped_after_the_read_timeout()
    {
        using var t = new TargetHost(output);
        using var peer = new RawPeer(t.Address, receiveTimeoutMs: 5000);
        Assert.True(peer.Hello(Purpose.Control).Accepted);
        // Announce a legal 1 MiB page batch and send 10 bytes of it: the host waits ReadTimeout (1 s), not forever.
        var header = RawPeer.FrameBytes(new Envelope { Pages = new PageBatch() }, length: 1 << 20)[..Frame.HeaderSize];
        peer.Write([.. header, .. new byte[10]]);
        var started = DateTime.UtcNow;
        Assert.True(peer.WaitClosed());
        Assert.InRange((DateTime.UtcNow - started).TotalSeconds, 0.5, 4.5);
        Assert.Empty(t.Status().Guests);
    }

    [Fact]
    public void Connections_beyond_the_limit_are_closed_at_accept()
    {
        using var t = new TargetHost(output, o => o with { MaxConnections = 3 });
        var held = Enumerable.Range(0, 3).Select(_ => new RawPeer(t.Address)).ToList();
        foreach (var p in held) Assert.True(p.Hello(Purpose.Control).Accepted);
        using (var extra = new RawPeer(t.Address)) Assert.True(extra.WaitClosed());
        t.WaitForLog("3 connections are open");
        foreach (var p in held) p.Dispose();
        Hosts.WaitUntil(() => { try { t.Status(); return true; } catch (IOException) { return false; } }, what: "the host to serve again");
    }

    [Fact]
    public void Idle_control_connections_are_closed()
    {
        using var t = new TargetHost(output, o => o with { IdleTimeout = TimeSpan.FromMilliseconds(500) });
        using var peer = new RawPeer(t.Address);
        Assert.True(peer.Hello(Purpose.Control).Accepted);
        Assert.True(peer.WaitClosed());
    }

    [Fact]
    public void A_silent_connection_is_dropped_after_the_handshake_timeout()
    {
        using var t = new TargetHost(output);
        using var peer = new RawPeer(t.Address);
        Assert.True(peer.WaitClosed()); // never said Hello
    }

    [Fact]
    public void Guests_and_their_memory_are_capped()
    {
        using var t = new TargetHost(output, o => o with { MaxGuests = 2, HostMemory = 1UL << 30, MaxMemoryFraction = 0.5 });
        using var c = HostClient.Connect(t.Address);
        c.Start("a", Guests.Elf("idle_forever"), 256 << 20, "idle_forever");
        var e = Assert.Throws<HostException>(() => c.Start("b", Guests.Elf("idle_forever"), 512 << 20, "idle_forever"));
        Assert.Contains("over this host's budget of 512 MiB", e.Message);
        c.Start("b", Guests.Elf("idle_forever"), 16 << 20, "idle_forever");
        Assert.Contains("its limit (--max-guests)", Assert.Throws<HostException>(() => c.Start("c", Guests.Elf("idle_forever"), 16 << 20, "idle_forever")).Message);
        Assert.Equal(2, c.Status().Guests.Count);
    }

    [Fact]
    public void Names_and_sizes_are_validated_where_they_enter()
    {
        using var t = new TargetHost(output);
        using var c = HostClient.Connect(t.Address);
        var elf = Guests.Elf("idle_forever");
        foreach (var bad in new[] { "team/db", "a\nforged line", new string('x', 5000), "", "-x", "..", "名前" })
        {
            var raw = new Envelope { StartGuest = new StartGuest { Name = bad, Elf = ByteString.CopyFrom(elf), MemorySize = 16 << 20 } };
            using var peer = new RawPeer(t.Address);
            Assert.True(peer.Hello(Purpose.Control).Accepted);
            peer.Send(raw);
            var reply = peer.Read().Result;
            Assert.False(reply.Ok);
            Assert.Contains("guest name", reply.Error);
            Assert.DoesNotContain("\n", reply.Error);
        }
        using (var peer = new RawPeer(t.Address))
        {
            peer.Hello(Purpose.Control);
            peer.Send(new Envelope { StartGuest = new StartGuest { Name = "zero", Elf = ByteString.CopyFrom(elf), MemorySize = 0 } });
            Assert.Contains("memory size 0", peer.Read().Result.Error);
        }
        Assert.Contains("may contain only", Assert.Throws<HostException>(() => c.Status("team/db")).Message);
        Assert.Empty(c.Status().Guests);
        Assert.DoesNotContain(t.LogLines, l => l.Contains('\n'));
    }

    [Theory]
    [InlineData("BBB128M")]
    [InlineData("128 M")]
    [InlineData("128MM")]
    [InlineData("M")]
    [InlineData("0")]
    [InlineData("12.5M")]
    [InlineData("1 28M")]
    public void Mem_parsing_is_strict(string text) => Assert.Throws<FormatException>(() => MachineConfig.ParseSize(text));

    [Theory]
    [InlineData("128M", 128UL << 20)]
    [InlineData("64KiB", 64UL << 10)]
    [InlineData("1G", 1UL << 30)]
    [InlineData("65536", 65536UL)]
    [InlineData("128MB", 128UL << 20)]
    public void Mem_parsing_accepts_sizes(string text, ulong expected) => Assert.Equal(expected, MachineConfig.ParseSize(text));

    [Fact]
    public void A_wrong_frame_header_version_is_refused()
    {
        using var t = new TargetHost(output);
        using var peer = new RawPeer(t.Address);
        peer.Write(RawPeer.FrameBytes(Transport.Connection.HelloMessage(Purpose.Control), version: 9));
        var reply = peer.Read().HelloReply;
        Assert.False(reply.Accepted);
        Assert.Contains("frame header version 9 is not supported", reply.Error);
    }

    [Fact]
    public void An_oversized_image_gets_the_hosts_reason_not_a_broken_pipe()
    {
        using var t = new TargetHost(output, o => o with { ReadTimeout = TimeSpan.FromSeconds(20) });
        using var c = HostClient.Connect(t.Address);
        var huge = new byte[FrameLimits.MaxElf + 1];
        Assert.Contains("a host accepts images up to 64 MiB", Assert.Throws<HostException>(() => c.Start("big", huge, 128 << 20)).Message);
        // A client that sends it anyway reads the host's refusal: the host takes in the rest before closing.
        using var peer = new RawPeer(t.Address, receiveTimeoutMs: 20000);
        peer.Hello(Purpose.Control);
        var frame = RawPeer.FrameBytes(new Envelope { StartGuest = new StartGuest { Name = "big", Elf = ByteString.CopyFrom(new byte[FrameLimits.Max((ushort)Envelope.BodyOneofCase.StartGuest)]), MemorySize = 128 << 20 } });
        peer.Write(frame);
        var reply = peer.Read().Result;
        Assert.False(reply.Ok);
        Assert.Contains("StartGuest message of", reply.Error);
        Assert.Contains("exceeds its limit", reply.Error);
    }

    [Fact]
    public void Incoming_migrations_are_capped()
    {
        using var t = new TargetHost(output, o => o with { MaxIncomingMigrations = 1 });
        using var first = new RawPeer(t.Address);
        Assert.True(first.Hello(Purpose.Migrate).Accepted);
        first.Send(HostileStreamTests.Setup("one"));
        Assert.True(first.Read().SetupReply.Accepted);
        using var second = new RawPeer(t.Address);
        Assert.True(second.Hello(Purpose.Migrate).Accepted);
        second.Send(HostileStreamTests.Setup("two"));
        var reply = second.Read().SetupReply;
        Assert.False(reply.Accepted);
        Assert.Contains("this host's limit (--max-incoming)", reply.Error);
    }
}
