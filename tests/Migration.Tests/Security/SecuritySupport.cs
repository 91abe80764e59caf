using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport.Tls;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests.Security;

/// <summary>A fleet made once per test run: its CA, two hosts on 127.0.0.1, an operator, a viewer, and an outsider with another CA.</summary>
internal static class Fleet
{
    private static readonly Lazy<string> Root = new(Make);

    private static string Make()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"lm-fleet-{Environment.ProcessId}");
        if (Directory.Exists(dir)) Directory.Delete(dir, true);
        CertificateAuthority.Init(dir, "op");
        foreach (var h in new[] { "hostA", "hostB", "hostC" }) CertificateAuthority.Issue(dir, Role.Host, h, [IPAddress.Loopback]);
        CertificateAuthority.Issue(dir, Role.Viewer, "eve", []);
        CertificateAuthority.Init(Path.Combine(dir, "rogue"), "mallory"); // a CA of its own: nothing it signs is trusted here
        CertificateAuthority.Issue(Path.Combine(dir, "rogue"), Role.Host, "rogueHost", [IPAddress.Loopback]);
        return dir;
    }

    public static string Dir => Root.Value;
    public static TlsIdentity Operator => TlsIdentity.Load(Dir);
    public static TlsIdentity Viewer => TlsIdentity.Load(Path.Combine(Dir, "eve"));
    public static TlsIdentity Host(string name) => TlsIdentity.Load(Path.Combine(Dir, name));
    public static TlsIdentity Outsider => TlsIdentity.Load(Path.Combine(Dir, "rogue"));
    public static TlsIdentity RogueHost => TlsIdentity.Load(Path.Combine(Dir, "rogue", "rogueHost"));
}

/// <summary>A peer that writes raw frames and bytes, as a hostile local process would.</summary>
internal sealed class RawPeer : IDisposable
{
    private readonly TcpClient _tcp;

    public RawPeer(string address, int receiveTimeoutMs = 5000)
    {
        var (h, p) = Transport.Address.Parse(address);
        _tcp = new TcpClient(h, p) { ReceiveTimeout = receiveTimeoutMs, NoDelay = true };
        Stream = _tcp.GetStream();
    }

    public Stream Stream { get; }

    public static byte[] FrameBytes(Envelope e, ushort? version = null, ushort? type = null, uint? length = null)
    {
        var payload = e.ToByteArray();
        var frame = new byte[Frame.HeaderSize + payload.Length];
        payload.CopyTo(frame, Frame.HeaderSize);
        Frame.WriteHeader(frame.AsSpan(0, Frame.HeaderSize), type ?? (ushort)e.BodyCase, payload);
        if (version is { } v) BinaryPrimitives.WriteUInt16LittleEndian(frame.AsSpan(4), v);
        if (length is { } l) BinaryPrimitives.WriteUInt32LittleEndian(frame.AsSpan(8), l);
        return frame;
    }

    public void Send(Envelope e) => Stream.Write(FrameBytes(e));

    public void Write(byte[] bytes) => Stream.Write(bytes);

    /// <summary>The next message other than a destination's heartbeat (it beats every few ms while a migration is in flight).</summary>
    public Envelope Read()
    {
        while (true)
        {
            var header = new byte[Frame.HeaderSize];
            Stream.ReadExactly(header);
            int length = (int)BinaryPrimitives.ReadUInt32LittleEndian(header.AsSpan(8));
            var payload = new byte[length];
            Stream.ReadExactly(payload);
            var e = Envelope.Parser.ParseFrom(payload);
            if (e.BodyCase != Envelope.BodyOneofCase.Heartbeat) return e;
        }
    }

    /// <summary>Hello, and the host's verdict.</summary>
    public HelloReply Hello(Purpose purpose)
    {
        Send(Transport.Connection.HelloMessage(purpose));
        return Read().HelloReply;
    }

    /// <summary>Ends our side (FIN): a host waiting for more must now close too.</summary>
    public void Finish()
    {
        try { _tcp.Client.Shutdown(SocketShutdown.Send); } catch (SocketException) { }
    }

    /// <summary>True when the host closed the connection (EOF or reset) within the receive timeout.</summary>
    public bool WaitClosed()
    {
        var buffer = new byte[4096];
        try
        {
            while (Stream.Read(buffer) > 0) { }
            return true;
        }
        catch (IOException e) when (e.InnerException is SocketException { SocketErrorCode: SocketError.ConnectionReset }) { return true; }
        catch (IOException e) when (e.InnerException is SocketException { SocketErrorCode: SocketError.TimedOut or SocketError.WouldBlock }) { return false; } // still open
        catch (IOException) { return true; }
    }

    public void Dispose() => _tcp.Dispose();
}

/// <summary>One host for hostile-input tests, with its log kept for assertions.</summary>
internal sealed class TargetHost : IDisposable
{
    private readonly List<string> _log = [];
    private readonly ITestOutputHelper? _output;

    public TargetHost(ITestOutputHelper? output, Func<HostOptions, HostOptions>? configure = null)
    {
        _output = output;
        var options = new HostOptions { Log = Log, ReadTimeout = TimeSpan.FromSeconds(1), HandshakeTimeout = TimeSpan.FromSeconds(1) };
        Host = new GuestHost(configure?.Invoke(options) ?? options);
    }

    public GuestHost Host { get; }
    public string Address => Host.Address;

    private void Log(string s)
    {
        lock (_log) _log.Add(s);
        try { _output?.WriteLine(s); } catch (InvalidOperationException) { }
    }

    public string[] LogLines { get { lock (_log) return [.. _log]; } }

    /// <summary>Waits for a log line containing <paramref name="text"/>; returns it.</summary>
    public string WaitForLog(string text, int timeoutMs = 10000)
    {
        var until = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        while (true)
        {
            var line = LogLines.FirstOrDefault(l => l.Contains(text, StringComparison.Ordinal));
            if (line != null) return line;
            if (DateTime.UtcNow > until) throw new TimeoutException($"the host never logged '{text}'; it logged:\n{string.Join("\n", LogLines.TakeLast(20))}");
            Thread.Sleep(20);
        }
    }

    /// <summary>A status round trip over a fresh connection: the host still serves.</summary>
    public StatusReply Status()
    {
        using var c = HostClient.Connect(Address);
        return c.Status();
    }

    public void Dispose() => Host.Dispose();
}

internal static class ProcessFigures
{
    public static long Rss { get { using var p = Process.GetCurrentProcess(); p.Refresh(); return p.WorkingSet64; } }
    public static int Threads { get { using var p = Process.GetCurrentProcess(); p.Refresh(); return p.Threads.Count; } }
}
