using System.Buffers.Binary;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
using LiveMigration.Migration.Transport.Tls;

// Re-runs the attack table of issue 14 against a host with TLS on loopback (in this process): each
// case, whether it was refused, the process's RSS and thread count before/after, and the host's log line.
// Usage: dotnet run -c Release --project bench/SecurityBench
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
string fleet = Path.Combine(Path.GetTempPath(), $"lm-secbench-{Environment.ProcessId}");
CertificateAuthority.Init(fleet, "op");
CertificateAuthority.Issue(fleet, Role.Host, "hostA", [IPAddress.Loopback]);
CertificateAuthority.Issue(fleet, Role.Host, "peer", [IPAddress.Loopback]);
CertificateAuthority.Issue(fleet, Role.Host, "hostB", [IPAddress.Loopback]);
CertificateAuthority.Issue(fleet, Role.Viewer, "eve", []);
using var op = TlsIdentity.Load(fleet);
using var peer = TlsIdentity.Load(Path.Combine(fleet, "peer"));
using var viewer = TlsIdentity.Load(Path.Combine(fleet, "eve"));
var log = new List<string>();
using var host = new GuestHost(new HostOptions { Tls = TlsIdentity.Load(Path.Combine(fleet, "hostA")), Log = s => { lock (log) log.Add(s); } });
// A hostile member of the fleet: a real host with its own certificate (so it can answer the call back a destination makes).
using var attacker = new GuestHost(new HostOptions { Tls = TlsIdentity.Load(Path.Combine(fleet, "peer")) });
using var hostB = new GuestHost(new HostOptions { Tls = TlsIdentity.Load(Path.Combine(fleet, "hostB")) });
byte[] kv = BenchRepo.GuestElf("kv");
using (var c = HostClient.Connect(host.Address, op)) c.Start("kv", kv, 64 << 20, "kv");
Thread.Sleep(500);
var rows = new List<string[]>();

Case("plaintext client: start a guest", () => Refused(() => { using var c = HostClient.Connect(host.Address); c.Start("x", kv, 64 << 20); }));
Case("no client certificate (TLS, none offered)", () => Refused(() => { using var tcp = new TcpClient("127.0.0.1", Port()); using var ssl = new System.Net.Security.SslStream(tcp.GetStream(), false, (_, _, _, _) => true); ssl.AuthenticateAsClient("hostA"); ssl.Write(new byte[1]); if (ssl.ReadByte() < 0) throw new IOException("the host closed the connection (TLS 1.3 checks the client's certificate after the client's handshake)"); }));
Case("viewer: stop a guest", () => Refused(() => { using var c = HostClient.Connect(host.Address, viewer); c.Stop("kv"); }));
Case("viewer: resolve --decision go", () => Refused(() => { using var c = HostClient.Connect(host.Address, viewer); c.Resolve("kv", "go"); }));
Case("viewer: attach to kv's console", () =>
{
    using var c = HostClient.Connect(host.Address, op);
    var (h, p) = Address.Parse(c.Status("kv").Guests[0].Console);
    using var tcp = new TcpClient(h, p) { ReceiveTimeout = 3000 };
    var (ssl, _) = viewer.AuthenticateAsClient(tcp.GetStream(), h);
    string line = new StreamReader(ssl).ReadLine() ?? "";
    return line.Contains("refused") ? $"refused: {line}" : "ACCEPTED";
});
Case("operator: Hello{MIGRATE} + MigrateSetup", () => Refused(() => { using var c = Connection.Connect(host.Address, tls: op); c.ClientHandshake(Purpose.Migrate); }));
Case("24 x frame header announcing 64 MiB after Hello", () =>
{
    var streams = Enumerable.Range(0, 24).Select(_ => OpenTls(op)).ToList();
    int refused = 0;
    foreach (var s in streams)
    {
        s.Write(Header(Envelope.BodyOneofCase.StatusRequest, 64 << 20));
        try { var r = ReadFrame(s); if (!r.Result.Ok) refused++; } catch (IOException) { refused++; }
    }
    streams.ForEach(s => s.Dispose());
    return $"{refused}/24 refused from the header";
});
Case("200 connections held after Hello", () =>
{
    var held = new List<Stream>();
    int closed = 0;
    for (int i = 0; i < 200; i++)
    {
        try { held.Add(OpenTls(op)); } catch (IOException) { closed++; }
    }
    Thread.Sleep(300);
    int threadsHeld = Threads();
    string status;
    try { status = $"status answered with {Status().Count} guest(s)"; }
    catch (IOException e) { status = $"status refused ({e.Message}): every slot is taken"; }
    held.ForEach(s => s.Dispose());
    return $"{held.Count} held, {closed} closed at accept (--max-connections {host.Options.MaxConnections}); {threadsHeld} threads while held; {status}; idle ones close after {host.Options.IdleTimeout.TotalSeconds:0} s";
});
Case("100 guests of 128 MiB", () =>
{
    using var c = HostClient.Connect(host.Address, op);
    int ok = 0;
    string last = "";
    for (int i = 0; i < 100; i++)
    {
        try { c.Start($"g{i}", kv, 128 << 20, "kv"); ok++; } catch (HostException e) { last = e.Message; }
    }
    for (int i = 0; i < ok; i++) c.Stop($"g{i}");
    return $"{ok} accepted, {100 - ok} refused: {last}";
});
Case("two guests of 16 GiB", () =>
{
    using var c = HostClient.Connect(host.Address, op);
    int ok = 0;
    string last = "";
    for (int i = 0; i < 2; i++) { try { c.Start($"big{i}", kv, 16UL << 30, "kv"); ok++; } catch (HostException e) { last = e.Message; } }
    for (int i = 0; i < ok; i++) c.Stop($"big{i}");
    return $"{ok} accepted, {2 - ok} refused: {last}";
});
Case("host certificate 'peer' claiming to be hostB (same IP)", () =>
{
    using var conn = Connection.Connect(host.Address, tls: peer);
    conn.ClientHandshake(Purpose.Migrate);
    conn.Send(Setup("db", 64 << 20, hostB.Address));
    var r = conn.Receive().SetupReply;
    return r.Accepted ? "ACCEPTED" : $"refused: {r.Error}";
});
Case("5 fake incoming migrations of 4 GiB (host certificate)", () =>
{
    var conns = new List<Connection>();
    int accepted = 0;
    string last = "";
    for (int i = 0; i < 5; i++)
    {
        var conn = Connection.Connect(host.Address, tls: peer);
        conn.ClientHandshake(Purpose.Migrate);
        conn.Send(Setup($"fake{i}", 4UL << 30, attacker.Address));
        var r = conn.Receive().SetupReply;
        if (r.Accepted) accepted++; else last = r.Error;
        conns.Add(conn);
    }
    conns.ForEach(c => c.Dispose());
    Wait(() => Status().Count == 1);
    return $"{accepted} accepted, {5 - accepted} refused: {last}; all discarded when their source left";
});
Case("malformed LogChunk (TraceFormatException)", () =>
{
    using var conn = Connection.Connect(host.Address, tls: peer);
    conn.ClientHandshake(Purpose.Migrate);
    conn.Send(Setup("victim", 64 << 20, attacker.Address));
    conn.Receive();
    var frame = new byte[36];
    frame[0] = 0xEE;
    conn.Send(new Envelope { Log = new LogChunk { Frame = ByteString.CopyFrom(frame) } });
    Wait(() => Status().Count == 1);
    return Status().Contains("victim") ? "LEFT IN arriving" : "discarded, name free";
});
foreach (var bad in new[] { "team/db", "a\nb", new string('x', 5000) })
    Case($"guest name {Printable(bad)} (raw StartGuest: lm itself refuses it before sending)", () =>
    {
        using var conn = Connection.Connect(host.Address, tls: op);
        conn.ClientHandshake(Purpose.Control);
        conn.Send(new Envelope { StartGuest = new StartGuest { Name = bad, Elf = ByteString.CopyFrom(kv), MemorySize = 64 << 20 } });
        var r = conn.Receive().Result;
        return r.Ok ? "ACCEPTED" : $"refused: {r.Error}";
    });
Case("memory_size = 0", () => Refused(() => { using var c = HostClient.Connect(host.Address, op); c.Start("zero", kv, 0); }));
Case("frame header version 9", () =>
{
    using var s = OpenTls(op, hello: false);
    var hello = Connection.HelloMessage(Purpose.Control).ToByteArray();
    var frame = new byte[Frame.HeaderSize + hello.Length];
    Frame.WriteHeader(frame, (ushort)Envelope.BodyOneofCase.Hello, hello);
    BinaryPrimitives.WriteUInt16LittleEndian(frame.AsSpan(4), 9);
    hello.CopyTo(frame, Frame.HeaderSize);
    s.Write(frame);
    var r = ReadFrame(s).HelloReply;
    return r.Accepted ? "ACCEPTED" : $"refused: {r.Error}";
});
Case("--mem BBB128M / \"128 M\"", () => Refused(() => LiveMigration.Guest.MachineConfig.ParseSize("BBB128M")) + "; " + Refused(() => LiveMigration.Guest.MachineConfig.ParseSize("128 M")));
Case("lm start of a 65 MiB image", () => Refused(() => { using var c = HostClient.Connect(host.Address, op); c.Start("huge", new byte[65 << 20], 64 << 20); }));
Case("kv still serves", () => { using var c = HostClient.Connect(host.Address, viewer); return $"status: {string.Join(", ", c.Status().Guests.Select(g => $"{g.Name} {g.State}"))}"; });

Console.WriteLine($"attack table (issue 14), host with mutual TLS on {host.Address}, in this process (with the attacking clients and two more hosts); RSS/threads of the process");
Console.WriteLine();
Console.WriteLine("| case | result | RSS before -> after | threads | host log |");
Console.WriteLine("|---|---|---|---|---|");
foreach (var r in rows) Console.WriteLine("| " + string.Join(" | ", r) + " |");
Console.WriteLine();
Console.WriteLine("transport cost of TLS on loopback (one connection, this process): bulk page frames (1 MiB, and 128 KiB as a compressed batch is,");
Console.WriteLine("the receiver with the host's 30 s frame timeout), and small-frame round trips (the switchover's ACK/GO pattern)");
Console.WriteLine("| link | bulk 1 MiB frames MiB/s | bulk 128 KiB frames MiB/s | round trip µs (median of 2000) |");
Console.WriteLine("|---|---|---|---|");
using (var peerId = TlsIdentity.Load(Path.Combine(fleet, "peer")))
using (var hostA2 = TlsIdentity.Load(Path.Combine(fleet, "hostA")))
    foreach (bool tls in new[] { false, true, false, true })
    {
        var (mibps, rttUs) = Transport(tls ? hostA2 : null, tls ? peerId : null, 1 << 20);
        var (small, _) = Transport(tls ? hostA2 : null, tls ? peerId : null, 128 << 10);
        Console.WriteLine($"| {(tls ? "TLS 1.3" : "plain")} | {mibps:F0} | {small:F0} | {rttUs:F1} |");
    }
Directory.Delete(fleet, true);
return 0;

static (double MiBps, double RttUs) Transport(TlsIdentity? server, TlsIdentity? client, int frameBytes)
{
    var listener = new TcpListener(IPAddress.Loopback, 0);
    listener.Start();
    int port = ((IPEndPoint)listener.LocalEndpoint).Port;
    Connection? accepted = null;
    var acceptor = new Thread(() => accepted = Connection.Accept(listener.AcceptSocket(), server, TimeSpan.FromSeconds(5)));
    acceptor.Start();
    using var c = Connection.Connect($"127.0.0.1:{port}", tls: client);
    acceptor.Join();
    using var a = accepted!;
    a.FrameTimeout = TimeSpan.FromSeconds(30); // as a host reads
    listener.Stop();
    var payload = new byte[frameBytes];
    Random.Shared.NextBytes(payload);
    var batch = new Envelope { Pages = new PageBatch { Zstd = ByteString.CopyFrom(payload) } };
    batch.Pages.Pages.Add(0);
    int frames = (300 << 20) / frameBytes;
    var sink = new Thread(() => { for (int i = 0; i < frames; i++) a.Receive(); });
    var sw = Stopwatch.StartNew();
    sink.Start();
    for (int i = 0; i < frames; i++) c.Send(batch);
    sink.Join();
    double mibps = (double)frames * frameBytes / (1 << 20) / sw.Elapsed.TotalSeconds;
    var echo = new Thread(() => { for (int i = 0; i < 2100; i++) { a.Receive(); a.Send(new Envelope { Ack = new Ack { Icount = (ulong)i } }); } });
    echo.Start();
    var rtts = new List<double>();
    for (int i = 0; i < 2100; i++)
    {
        long t0 = Stopwatch.GetTimestamp();
        c.Send(new Envelope { Go = new Go() });
        c.Receive();
        if (i >= 100) rtts.Add(Stopwatch.GetElapsedTime(t0).TotalMicroseconds);
    }
    echo.Join();
    rtts.Sort();
    return (mibps, rtts[rtts.Count / 2]);
}

void Case(string name, Func<string> run)
{
    int logBefore;
    lock (log) logBefore = log.Count;
    GC.Collect();
    long rss = Rss();
    int threads = Threads();
    string result;
    try { result = run(); }
    catch (Exception e) { result = $"ERROR {e.GetType().Name}: {e.Message}"; }
    Thread.Sleep(300);
    GC.Collect();
    string line;
    lock (log) line = log.Skip(logBefore).LastOrDefault(l => !l.Contains("started '") && !l.Contains("stopped '")) ?? "";
    rows.Add([name, result.Replace("|", "/"), $"{rss >> 20} -> {Rss() >> 20} MB", $"{threads} -> {Threads()}", line.Replace("|", "/")]);
    Console.Error.WriteLine($"{name}: {result}");
}

static string Refused(Action a)
{
    try { a(); return "ACCEPTED"; }
    catch (Exception e) when (e is IOException or HostException or FormatException) { return $"refused: {e.Message}"; }
}

int Port() => int.Parse(host.Address[(host.Address.LastIndexOf(':') + 1)..]);

Stream OpenTls(TlsIdentity id, bool hello = true)
{
    var tcp = new TcpClient("127.0.0.1", Port()) { ReceiveTimeout = 5000 };
    var (ssl, _) = id.AuthenticateAsClient(tcp.GetStream(), "127.0.0.1");
    if (hello)
    {
        var h = Connection.HelloMessage(Purpose.Control).ToByteArray();
        var frame = new byte[Frame.HeaderSize + h.Length];
        Frame.WriteHeader(frame, (ushort)Envelope.BodyOneofCase.Hello, h);
        h.CopyTo(frame, Frame.HeaderSize);
        ssl.Write(frame);
        if (!ReadFrame(ssl).HelloReply.Accepted) throw new IOException("hello refused");
    }
    return ssl;
}

static byte[] Header(Envelope.BodyOneofCase type, uint length)
{
    var h = new byte[Frame.HeaderSize];
    Frame.WriteHeader(h, (ushort)type, []);
    BinaryPrimitives.WriteUInt32LittleEndian(h.AsSpan(8), length);
    return h;
}

static Envelope ReadFrame(Stream s)
{
    var header = new byte[Frame.HeaderSize];
    s.ReadExactly(header);
    var payload = new byte[BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(8))];
    s.ReadExactly(payload);
    return Envelope.Parser.ParseFrom(payload);
}

static Envelope Setup(string name, ulong memory, string source)
{
    // What a real source of this build announces (the destination checks it before any page), at the claimed size.
    using var m = new LiveMigration.Guest.Machine(new LiveMigration.Guest.MachineConfig { MemorySize = 1 << 20 }, LiveMigration.Guest.NullHostPort.Instance, compileBlocks: false);
    var id = LiveMigration.Migration.Engine.MachineIdentities.Of(m);
    id.MemorySize = memory;
    id.PageCount = (uint)(memory / 4096);
    return new() { Setup = new MigrateSetup { MigrationId = $"m-{name}", Name = name, MemorySize = memory, PageCount = (uint)(memory / 4096), Strategy = Strategy.Log, Source = source, ImageName = "x", Machine = id } };
}

List<string> Status() { using var c = HostClient.Connect(host.Address, op); return c.Status().Guests.Select(g => g.Name).ToList(); }

static void Wait(Func<bool> condition)
{
    var until = DateTime.UtcNow.AddSeconds(10);
    while (!condition() && DateTime.UtcNow < until) Thread.Sleep(50);
}

static string Printable(string s) => s.Length > 20 ? $"'{s[..8]}…' ({s.Length} chars)" : $"'{s.Replace("\n", "\\n")}'";
static long Rss() { using var p = Process.GetCurrentProcess(); p.Refresh(); return p.WorkingSet64; }
static int Threads() { using var p = Process.GetCurrentProcess(); p.Refresh(); return p.Threads.Count; }
