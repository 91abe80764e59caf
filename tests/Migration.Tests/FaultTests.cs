using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Google.Protobuf;
using LiveMigration.Cli.Demo;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

public sealed class FaultTests(ITestOutputHelper output)
{
    public static TheoryData<string, FaultPoint> Cuts()
    {
        var d = new TheoryData<string, FaultPoint>();
        foreach (var s in new[] { "stopcopy", "log" })
            foreach (var p in Enum.GetValues<FaultPoint>())
                if ((p != FaultPoint.Log || s == "log") && p != FaultPoint.Postcopy) d.Add(s, p);
        return d;
    }

    /// <summary>
    /// Cut the migration connection at each phase: afterwards exactly one host runs the guest, the
    /// kv data is intact, and a retry (or, after commit, a migration back) succeeds.
    /// </summary>
    [Theory]
    [MemberData(nameof(Cuts))]
    public void Cutting_the_connection_leaves_exactly_one_runner_and_a_retry_succeeds(string strategy, FaultPoint at)
    {
        int armed = 1;
        using var hosts = new Hosts(output, fault: p => p == at && Interlocked.Exchange(ref armed, 0) == 1);
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("kv", Guests.Elf("kv"), 16 << 20, "kv");
        using var client = new KvClient(hosts.A.Address, "kv");
        client.WaitReady();
        for (int i = 0; i < 20; i++) client.Set($"a{i}", $"x{i}");

        var r = hosts.Migrate("kv", hosts.A, hosts.B, strategy);
        Assert.Equal(0, Volatile.Read(ref armed)); // the fault point was reached
        // After the final state the ACK may already have arrived when the cut comes: then the source commits.
        if (at is FaultPoint.AfterAck or FaultPoint.BeforeCommit || (at == FaultPoint.AfterFinalState && r.Success)) // pairwise: the ACK commits, the cut only loses GO
        {
            // Committed: the report says so; the destination learns GO by asking the source.
            Assert.True(r.Success, r.Error);
            Hosts.WaitUntil(() => hosts.RunningOn("kv") == hosts.B.Address, what: "the destination to resolve GO");
        }
        else
        {
            Assert.False(r.Success);
            Hosts.WaitUntil(() => hosts.B.FindInstance("kv") == null && hosts.B.Status().Guests.Count == 0, what: "the destination to discard");
            Assert.Equal(hosts.A.Address, hosts.RunningOn("kv"));
        }
        Assert.Equal(1, hosts.RunningCount("kv"));
        for (int i = 0; i < 20; i++) Assert.Equal($"x{i}", client.Get($"a{i}"));

        // Retry (from wherever it runs now to the other host).
        var (from, to) = hosts.RunningOn("kv") == hosts.A.Address ? (hosts.A, hosts.B) : (hosts.B, hosts.A);
        var retry = hosts.Migrate("kv", from, to, strategy);
        Assert.True(retry.Success, retry.Error);
        Assert.Equal(1, hosts.RunningCount("kv"));
        Assert.Equal(to.Address, hosts.RunningOn("kv"));
        client.Set("after", "retry");
        Assert.Empty(client.VerifyAll());
    }

    /// <summary>
    /// The source closes its console right after the final state (so the commit does not wait for it).
    /// A cancel in that window rolls back: the guest gets a new console holding the input it had not
    /// read, and a client that reconnects loses nothing.
    /// </summary>
    [Fact]
    public void A_rollback_after_the_final_state_reopens_the_console_and_loses_nothing()
    {
        GuestHost? source = null;
        using var hosts = new Hosts(output, fault: p =>
        {
            if (p == FaultPoint.AfterFinalState) source!.Cancel("kv");
            return false;
        });
        source = hosts.A;
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("kv", Guests.Elf("kv"), 16 << 20, "kv");
        using var client = new KvClient(hosts.A.Address, "kv");
        client.WaitReady();
        for (int i = 0; i < 50; i++) client.Set($"a{i}", $"x{i}");
        string consoleBefore = hosts.A.Status("kv").Guests.Single().Console;

        var r = hosts.Migrate("kv", hosts.A, hosts.B, "log");
        Assert.False(r.Success);
        Assert.Equal("cancelled", r.Error);
        Hosts.WaitUntil(() => hosts.B.FindInstance("kv") == null && hosts.B.Status().Guests.Count == 0, what: "the destination to discard");
        Assert.Equal(hosts.A.Address, hosts.RunningOn("kv"));
        var info = hosts.A.Status("kv").Guests.Single();
        Assert.Equal(GuestStatus.Running, info.Status);
        Assert.NotEqual(consoleBefore, info.Console); // a new endpoint: clients find it through status
        for (int i = 0; i < 50; i++) Assert.Equal($"x{i}", client.Get($"a{i}"));
        client.Set("after", "rollback");
        Assert.Equal("rollback", client.Get("after"));
        Assert.Empty(client.VerifyAll());
    }

    [Fact]
    public void Cancel_at_random_points_keeps_the_guest_on_the_source()
    {
        var rng = new Random(1234);
        using var hosts = new Hosts(output);
        using (var c = HostClient.Connect(hosts.A.Address)) c.Start("g", Guests.Elf("dirty_hotcold"), 96 << 20, "dirty_hotcold");
        int cancelled = 0, completed = 0;
        for (int round = 0; round < 6; round++)
        {
            var from = hosts.RunningOn("g") == hosts.A.Address ? hosts.A : hosts.B;
            var to = from == hosts.A ? hosts.B : hosts.A;
            int delay = rng.Next(0, 120);
            var migration = Task.Run(() => hosts.Migrate("g", from, to, round % 2 == 0 ? "stopcopy" : "log", bandwidth: 200_000_000));
            Thread.Sleep(delay);
            string? cancelError = null;
            try { using var c = HostClient.Connect(from.Address); c.Cancel("g"); }
            catch (HostException e) { cancelError = e.Message; }
            var r = migration.Result;
            output.WriteLine($"round {round}: cancel after {delay} ms -> {(cancelError ?? "cancelled")}; report success={r.Success} {r.Error}");
            if (r.Success) { completed++; Assert.NotNull(cancelError); Assert.Equal(to.Address, hosts.RunningOn("g")); }
            else { cancelled++; Assert.Null(cancelError); Assert.Equal(from.Address, hosts.RunningOn("g")); }
            Hosts.WaitUntil(() => hosts.RunningCount("g") == 1 && to.Status().Guests.All(x => x.Status is GuestStatus.Running or GuestStatus.Moved), what: "one runner");
            var g = (from.FindInstance("g") ?? to.FindInstance("g"))!;
            ulong ic = g.Machine.Icount;
            Hosts.WaitUntil(() => g.Machine.Icount > ic, what: "the guest to keep running");
        }
        output.WriteLine($"cancelled {cancelled}, completed {completed}");
        Assert.True(cancelled > 0);
    }

    [Fact]
    public void Garbage_peer_is_refused_clearly()
    {
        using var hosts = new Hosts(output, count: 1);
        var (h, p) = Address.Parse(hosts.A.Address);
        using var tcp = new TcpClient(h, p);
        var s = tcp.GetStream();
        s.Write(Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        var reply = ReadFrame(s);
        Assert.False(reply.HelloReply.Accepted);
        Assert.Contains("not speaking the LiveMigration protocol", reply.HelloReply.Error);
        Assert.Contains("GET ", reply.HelloReply.Error);
    }

    [Fact]
    public void Client_talking_to_a_non_host_gets_a_clear_error()
    {
        var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var server = Task.Run(() =>
        {
            using var c = listener.AcceptTcpClient();
            c.GetStream().Write(Encoding.ASCII.GetBytes("SSH-2.0-OpenSSH_9.2\r\n\0\0\0\0\0\0\0\0"));
            Thread.Sleep(500);
        });
        var e = Assert.Throws<ProtocolException>(() => HostClient.Connect($"127.0.0.1:{((IPEndPoint)listener.LocalEndpoint).Port}"));
        Assert.Contains("is not a LiveMigration host", e.Message);
        Assert.Contains("SSH-", e.Message);
        server.Wait();
        listener.Stop();
    }

    [Fact]
    public void Old_protocol_version_is_refused_on_both_ends()
    {
        using var hosts = new Hosts(output, count: 1);
        var (h, p) = Address.Parse(hosts.A.Address);
        using var tcp = new TcpClient(h, p);
        var s = tcp.GetStream();
        var hello = Connection.HelloMessage(Purpose.Control, version: 0);
        hello.Hello.MinProtocolVersion = 0;
        WriteFrame(s, hello);
        var reply = ReadFrame(s);
        Assert.False(reply.HelloReply.Accepted);
        Assert.Contains("protocol version 0 is not supported", reply.HelloReply.Error);
    }

    [Fact]
    public void Incompatible_machine_config_is_refused_and_the_guest_stays()
    {
        using var hosts = new Hosts(output, maxMemory: 64 << 20);
        using var c = HostClient.Connect(hosts.A.Address);
        // A's limit is 64 MiB too, so use the in-process API to start a larger guest on a roomier host.
        using var big = new GuestHost(new HostOptions());
        using var bc = HostClient.Connect(big.Address);
        bc.Start("big", Guests.Elf("idle_forever"), 128 << 20, "idle_forever");
        var r = bc.Migrate(new MigrateCommand { Name = "big", Target = hosts.B.Address, Strategy = Strategy.Stopcopy });
        Assert.False(r.Success);
        Assert.Contains("machine config not supported", r.Error);
        Assert.Equal(GuestStatus.Running, big.FindInstance("big")!.State);
        Assert.Empty(hosts.B.Status().Guests);
    }

    private static void WriteFrame(Stream s, Envelope e)
    {
        var payload = e.ToByteArray();
        var header = new byte[Frame.HeaderSize];
        Frame.WriteHeader(header, (ushort)e.BodyCase, payload);
        s.Write(header);
        s.Write(payload);
    }

    private static Envelope ReadFrame(Stream s)
    {
        var header = new byte[Frame.HeaderSize];
        s.ReadExactly(header);
        int length = (int)BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(8));
        var payload = new byte[length];
        s.ReadExactly(payload);
        return Envelope.Parser.ParseFrom(payload);
    }
}
