using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Text;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
using LiveMigration.Migration.Transport.Tls;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests.Security;

/// <summary>Mutual TLS on every connection: who gets in, who does what, and that a migration still verifies.</summary>
public sealed class TlsTests(ITestOutputHelper output)
{
    private GuestHost TlsHost(string name, List<string>? log = null) => new(new HostOptions
    {
        Tls = Fleet.Host(name),
        Log = s => { if (log != null) lock (log) log.Add(s); try { output.WriteLine(s); } catch (InvalidOperationException) { } },
    });

    [Fact]
    public void Migration_and_console_run_over_mutual_TLS_and_verify()
    {
        using var a = TlsHost("hostA");
        using var b = TlsHost("hostB");
        using var op = Fleet.Operator;
        using (var c = HostClient.Connect(a.Address, op)) c.Start("kv", Guests.Elf("kv"), 16 << 20, "kv");
        using (var c = HostClient.Connect(a.Address, op))
        {
            var r = c.Migrate(new MigrateCommand { Name = "kv", Target = b.Address, Strategy = Strategy.Log });
            Assert.True(r.Success, r.Error);
            Assert.True(r.DigestVerified);
            // The GO answer carries the console's bytes: only the destination may ask for it.
            GoAnswer? Ask(string who)
            {
                using var id = Fleet.Host(who);
                using var q = Connection.Connect(a.Address, tls: id);
                q.ClientHandshake(Purpose.Control);
                q.Send(new Envelope { GoQuery = new GoQuery { MigrationId = r.MigrationId } });
                var reply = q.Receive();
                if (reply.BodyCase == Envelope.BodyOneofCase.Result) Assert.Contains("is not lm-host 'hostB', the destination of migration", reply.Result.Error);
                return reply.BodyCase == Envelope.BodyOneofCase.GoAnswer ? reply.GoAnswer : null;
            }
            Assert.Equal(Decision.Go, Ask("hostB")!.Decision);
            Assert.Null(Ask("hostC"));
        }
        Assert.NotNull(b.FindInstance("kv"));
        var (host, info) = HostClient.Locate(a.Address, "kv", tls: op);
        Assert.Equal(b.Address, host);
        // The console: TLS as the operator, then the kv guest answers.
        var (h, p) = Address.Parse(info.Console);
        using var tcp = new TcpClient(h, p);
        var (ssl, peer) = op.AuthenticateAsClient(tcp.GetStream(), h);
        Assert.Equal("hostB", peer.Name);
        ssl.Write(Encoding.ASCII.GetBytes("SET k v1\nGET k\n"));
        var text = new StringBuilder();
        var buffer = new byte[4096];
        tcp.ReceiveTimeout = 10000;
        while (!text.ToString().Contains("v1")) text.Append(Encoding.ASCII.GetString(buffer, 0, ssl.Read(buffer)));
    }

    [Fact]
    public void Plaintext_peers_and_outsiders_are_refused_before_any_message()
    {
        var log = new List<string>();
        using var a = TlsHost("hostA", log);
        var plain = Assert.Throws<ProtocolException>(() => HostClient.Connect(a.Address));
        Assert.Contains("accepts only TLS clients", plain.Message);
        using var outsider = Fleet.Outsider;
        var e = Assert.ThrowsAny<IOException>(() => HostClient.Connect(a.Address, outsider));
        output.WriteLine(e.Message);
        Hosts.WaitUntil(() => { lock (log) return log.Any(l => l.Contains("does not chain to this fleet's CA")); }, what: "the host to log the outsider");
        // A host of the other fleet cannot receive our migrations either: the client checks the server too.
        using var rogue = new GuestHost(new HostOptions { Tls = Fleet.RogueHost });
        using var op = Fleet.Operator;
        var server = Assert.Throws<TlsRefusedException>(() => HostClient.Connect(rogue.Address, op));
        Assert.Contains("does not chain to this fleet's CA", server.Message);
        using var c = HostClient.Connect(a.Address, op);
        Assert.Empty(c.Status().Guests);
    }

    [Fact]
    public void Server_certificate_must_name_the_address_dialled()
    {
        using var a = TlsHost("hostA");
        using var op = Fleet.Operator;
        string port = a.Address[(a.Address.LastIndexOf(':') + 1)..];
        var e = Assert.Throws<TlsRefusedException>(() => HostClient.Connect($"localhost:{port}", op));
        Assert.Contains("is not issued for localhost", e.Message);
    }

    [Fact]
    public void Tls_1_2_is_refused()
    {
        using var a = TlsHost("hostA");
        using var op = Fleet.Operator;
        var (h, p) = Address.Parse(a.Address);
        using var tcp = new TcpClient(h, p);
        using var ssl = new SslStream(tcp.GetStream());
        Assert.ThrowsAny<Exception>(() => ssl.AuthenticateAsClient(new SslClientAuthenticationOptions
        {
            TargetHost = "hostA",
            EnabledSslProtocols = SslProtocols.Tls12,
            ClientCertificates = [op.Certificate],
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        }));
    }

    [Fact]
    public void Roles_are_checked_for_every_request()
    {
        var log = new List<string>();
        using var a = TlsHost("hostA", log);
        using var op = Fleet.Operator;
        using var viewer = Fleet.Viewer;
        using var peerHost = Fleet.Host("hostC");
        using (var c = HostClient.Connect(a.Address, op)) c.Start("g", Guests.Elf("idle_forever"), 16 << 20, "idle_forever");
        using (var v = HostClient.Connect(a.Address, viewer))
        {
            Assert.Single(v.Status().Guests);
            Assert.Contains("may not stop guests", Assert.Throws<HostException>(() => v.Stop("g")).Message);
            Assert.Contains("may not start guests", Assert.Throws<HostException>(() => v.Start("h", Guests.Elf("idle_forever"), 16 << 20)).Message);
            Assert.Contains("may not migrate guests", Assert.Throws<HostException>(() => v.Migrate(new MigrateCommand { Name = "g", Target = "127.0.0.1:1" })).Message);
            Assert.Contains("may not resolve", Assert.Throws<HostException>(() => v.Resolve("g", "go")).Message);
        }
        using (var hc = HostClient.Connect(a.Address, peerHost))
            Assert.Contains("may not stop guests", Assert.Throws<HostException>(() => hc.Stop("g")).Message);
        // A migration stream needs a host's certificate: an operator's Hello{MIGRATE} is refused at the handshake.
        var conn = Connection.Connect(a.Address, tls: op);
        var e = Assert.Throws<ProtocolException>(() => conn.ClientHandshake(Purpose.Migrate));
        Assert.Contains("may not send or receive migrations", e.Message);
        conn.Dispose();
        // The console: a viewer gets one line and the door.
        var info = HostClient.Connect(a.Address, op).Status("g").Guests.Single();
        var (h, p) = Address.Parse(info.Console);
        using var tcp = new TcpClient(h, p) { ReceiveTimeout = 5000 };
        var (ssl, _) = viewer.AuthenticateAsClient(tcp.GetStream(), h);
        var reader = new StreamReader(ssl);
        Assert.Contains("may not attach to consoles", reader.ReadLine());
        Assert.Equal(GuestStatus.Running, a.FindInstance("g")!.State);
    }

    [Fact]
    public void A_host_sends_migrations_only_as_itself_and_only_the_owner_completes_one()
    {
        var log = new List<string>();
        using var a = TlsHost("hostA");
        using var b = TlsHost("hostB");
        using var c = TlsHost("hostC", log);
        using var asA = Fleet.Host("hostA");
        using var asB = Fleet.Host("hostB");
        using var op = Fleet.Operator;
        SetupReply Offer(TlsIdentity who, string source, string name)
        {
            using var conn = Connection.Connect(c.Address, tls: who);
            conn.ClientHandshake(Purpose.Migrate);
            var setup = HostileStreamTests.Setup(name);
            setup.Setup.Source = source;
            conn.Send(setup);
            return conn.Receive().SetupReply;
        }
        // hostA's certificate claiming to be hostB (same address, so the same SAN): the call back to hostB shows the lie.
        var lie = Offer(asA, b.Address, "db");
        Assert.False(lie.Accepted);
        Assert.Contains("lm-host 'hostA' claims to be the source", lie.Error);
        Assert.Contains("lm-host 'hostB'", lie.Error);
        // A source where no host listens cannot be confirmed either.
        var nobody = Offer(asA, "127.0.0.1:1", "db");
        Assert.False(nobody.Accepted);
        Assert.Contains("cannot confirm", nobody.Error);
        using (var s = HostClient.Connect(c.Address, op)) Assert.Empty(s.Status().Guests); // nothing reserved
        Assert.Contains(log, l => l.Contains("refused migration of 'db'") && l.Contains("claims to be the source"));

        // As itself hostA is accepted; then hostB cannot take over that migration's post-copy.
        using var real = Connection.Connect(c.Address, tls: asA);
        real.ClientHandshake(Purpose.Migrate);
        var setup = HostileStreamTests.Setup("db");
        setup.Setup.Source = a.Address;
        real.Send(setup);
        Assert.True(real.Receive().SetupReply.Accepted);
        using (var thief = Connection.Connect(c.Address, tls: asB))
        {
            thief.ClientHandshake(Purpose.Migrate);
            thief.Send(new Envelope { PostcopyResume = new PostcopyResume { Name = "db", MigrationId = setup.Setup.MigrationId } });
            Envelope answer;
            do answer = thief.Receive(); while (answer.BodyCase == Envelope.BodyOneofCase.Heartbeat);
            Assert.Contains("lm-host 'hostB' is not lm-host 'hostA', the source that owns it", answer.Abort.Reason);
        }
        using (var s = HostClient.Connect(c.Address, op)) Assert.Equal(DestinationState.Arriving, s.Status().Guests.Single().Arrival);
    }

    [Fact]
    public void Silent_console_clients_do_not_hold_up_the_operator()
    {
        using var a = TlsHost("hostA"); // a 5 s handshake timeout
        using var op = Fleet.Operator;
        GuestInfo info;
        using (var c = HostClient.Connect(a.Address, op))
        {
            c.Start("kv", Guests.Elf("kv"), 16 << 20, "kv");
            info = c.Status("kv").Guests.Single();
        }
        var (h, p) = Address.Parse(info.Console);
        var silent = Enumerable.Range(0, 5).Select(_ => new TcpClient(h, p)).ToList(); // connect, never start TLS
        try
        {
            Thread.Sleep(200);
            var sw = System.Diagnostics.Stopwatch.StartNew();
            using var tcp = new TcpClient(h, p) { ReceiveTimeout = 10000 };
            var (ssl, _) = op.AuthenticateAsClient(tcp.GetStream(), h);
            ssl.Write(Encoding.ASCII.GetBytes("SET k v1\nGET k\n"));
            var text = new StringBuilder();
            var buffer = new byte[4096];
            while (!text.ToString().Contains("v1")) text.Append(Encoding.ASCII.GetString(buffer, 0, ssl.Read(buffer)));
            // Served one after another, five silent clients would hold the operator for 5 x 5 s.
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(4.5), $"the operator waited {sw.Elapsed.TotalSeconds:F1} s behind silent clients");
        }
        finally { silent.ForEach(t => t.Dispose()); }
    }

    [Fact]
    public void Without_tls_a_host_binds_loopback_only()
    {
        var e = Assert.Throws<HostException>(() => new GuestHost(new HostOptions { Listen = "0.0.0.0:0" }));
        Assert.Contains("requires TLS", e.Message);
        using var ok = new GuestHost(new HostOptions { Listen = "0.0.0.0:0", Tls = Fleet.Host("hostA") });
    }

    [Fact]
    public void Certificates_carry_role_usage_and_address()
    {
        using var h = Fleet.Host("hostA");
        Assert.Equal(Role.Host, h.Role);
        Assert.Equal("hostA", h.Name);
        Assert.True(TlsPolicy.Names(h.Certificate, "127.0.0.1"));
        Assert.True(TlsPolicy.Names(h.Certificate, "hostA"));
        Assert.False(TlsPolicy.Names(h.Certificate, "10.0.0.1"));
        Assert.NotNull(TlsPolicy.Check(h.Certificate, h.Ca, TlsPolicy.ServerAuth).Identity);
        using var op = Fleet.Operator;
        Assert.Equal(Role.Operator, op.Role);
        Assert.Contains("is not for Server Authentication", TlsPolicy.Check(op.Certificate, op.Ca, TlsPolicy.ServerAuth).Error);
        using var outsider = Fleet.Outsider;
        Assert.Contains("does not chain", TlsPolicy.Check(outsider.Certificate, op.Ca, TlsPolicy.ClientAuth).Error);
        Assert.Throws<IOException>(() => CertificateAuthority.Init(Fleet.Dir)); // never replaces a CA
    }
}
