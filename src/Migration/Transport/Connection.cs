using System.Buffers;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using Google.Protobuf;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport.Tls;

namespace LiveMigration.Migration.Transport;

/// <summary>What a byte on the wire was for; the report adds them up per category.</summary>
public enum ByteCategory { Checkpoint = 0, Log = 1, State = 2, Protocol = 3, Postcopy = 4, Disk = 5 }

/// <summary>
/// One framed, full-duplex connection over TCP, in mutual TLS 1.3 when the host has credentials
/// (<see cref="TlsIdentity"/>): any thread may <see cref="Send"/> (sends are serialized), one thread
/// receives. Counts bytes per <see cref="ByteCategory"/>, headers included; bulk sends pass the
/// optional <see cref="TokenBucket"/>. A received frame's buffer grows only as its bytes arrive,
/// and the whole frame must arrive within <see cref="FrameTimeout"/> once its header did.
/// </summary>
public sealed class Connection : IDisposable
{
    private const int InitialBuffer = 64 << 10;

    private readonly Socket _socket;
    private readonly Stream _stream;
    private readonly object _sendLock = new();
    private readonly long[] _sent = new long[6];
    private readonly byte[] _rxHeader = new byte[Frame.HeaderSize];
    private int _closed;
    private int _idleTimeoutMs; // 0: infinite
    private int _socketTimeoutMs;

    public Connection(Socket socket) : this(socket, null, PeerIdentity.Loopback) { }

    private Connection(Socket socket, Stream? stream, PeerIdentity peer)
    {
        _socket = socket;
        Peer = peer;
        try
        {
            _socket.NoDelay = true;
            Remote = socket.RemoteEndPoint?.ToString() ?? "?";
        }
        catch (SocketException) { Remote = "?"; } // already reset by the peer: the first read says so
        catch (ObjectDisposedException) { Remote = "?"; }
        _stream = stream ?? new NetworkStream(socket, ownsSocket: true);
    }

    public string Remote { get; } = "?";
    /// <summary>Who the peer proved to be (its certificate), or <see cref="PeerIdentity.Loopback"/> without TLS.</summary>
    public PeerIdentity Peer { get; }
    public bool Encrypted => _stream is SslStream;
    public TokenBucket? Limiter { get; set; }
    /// <summary>Version the peer announced in its Hello (or its reply).</summary>
    public uint PeerVersion { get; private set; } = Frame.ProtocolVersion;
    /// <summary>Once a frame's header arrived, the rest of it must arrive within this (infinite by default).</summary>
    public TimeSpan FrameTimeout { get; set; } = Timeout.InfiniteTimeSpan;

    public long Sent(ByteCategory c) => Interlocked.Read(ref _sent[(int)c]);
    public long SentTotal => _sent.Sum();
    private long _received;
    /// <summary>Bytes of whole frames received (headers included), the same measure as <see cref="SentTotal"/>.</summary>
    public long ReceivedTotal => Interlocked.Read(ref _received);

    public static Connection Connect(string address, TimeSpan? timeout = null, TlsIdentity? tls = null)
    {
        var (host, port) = Address.Parse(address);
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        var limit = timeout ?? TimeSpan.FromSeconds(5);
        try
        {
            using var cts = new CancellationTokenSource(limit);
            socket.ConnectAsync(host, port, cts.Token).AsTask().GetAwaiter().GetResult();
        }
        catch (OperationCanceledException)
        {
            socket.Dispose();
            throw new IOException($"timed out connecting to {address}");
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new IOException($"cannot connect to {address}: {e.Message}", e);
        }
        if (tls == null) return new Connection(socket);
        var net = new NetworkStream(socket, ownsSocket: true);
        socket.ReceiveTimeout = socket.SendTimeout = (int)Math.Max(limit.TotalMilliseconds, 10_000);
        try
        {
            var (ssl, peer) = tls.AuthenticateAsClient(net, host);
            socket.ReceiveTimeout = socket.SendTimeout = 0;
            return new Connection(socket, ssl, peer);
        }
        catch (TlsRefusedException e)
        {
            net.Dispose();
            throw new TlsRefusedException($"{address}: {e.Message}", e);
        }
    }

    /// <summary>Server side of a new connection: the TLS handshake (when <paramref name="tls"/> is set) within <paramref name="handshakeTimeout"/>.</summary>
    public static Connection Accept(Socket socket, TlsIdentity? tls, TimeSpan handshakeTimeout)
    {
        if (tls == null) return new Connection(socket);
        var net = new NetworkStream(socket, ownsSocket: true);
        try
        {
            socket.ReceiveTimeout = socket.SendTimeout = (int)handshakeTimeout.TotalMilliseconds;
            var (ssl, peer) = tls.AuthenticateAsServer(net);
            socket.ReceiveTimeout = socket.SendTimeout = 0;
            return new Connection(socket, ssl, peer);
        }
        catch
        {
            net.Dispose();
            throw;
        }
    }

    public void Send(Envelope message, ByteCategory category = ByteCategory.Protocol, CancellationToken cancel = default)
    {
        int size = message.CalculateSize();
        var buffer = ArrayPool<byte>.Shared.Rent(Frame.HeaderSize + size);
        try
        {
            // Header and payload in one write: one segment, so the peer wakes once per frame.
            var frame = buffer.AsSpan(0, Frame.HeaderSize + size);
            var payload = frame[Frame.HeaderSize..];
            message.WriteTo(payload);
            Frame.WriteHeader(frame[..Frame.HeaderSize], (ushort)message.BodyCase, payload);
            Limiter?.Take(frame.Length, cancel);
            lock (_sendLock) _stream.Write(frame);
            Interlocked.Add(ref _sent[(int)category], size + Frame.HeaderSize);
        }
        catch (ObjectDisposedException e) { throw new IOException("connection closed", e); }
        catch (IOException e) when (e is not ProtocolException) { throw Explain(e, sending: true); }
        catch (InvalidOperationException e) { throw new IOException($"connection unusable: {e.Message}", e); } // SslStream after a failed write
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>Reads the next envelope; EOF, garbage and timeouts are <see cref="IOException"/>s.</summary>
    public Envelope Receive()
    {
        byte[]? buffer = null;
        try
        {
            SetSocketTimeout(_idleTimeoutMs);
            ReadExactly(_rxHeader, eofMessage: "the peer closed the connection");
            int length = Frame.ParseHeader(_rxHeader, out _, out ushort type, out uint checksum);
            long deadline = FrameTimeout == Timeout.InfiniteTimeSpan ? 0 : Environment.TickCount64 + (long)FrameTimeout.TotalMilliseconds;
            // Grown as bytes arrive: a header's claim alone never pins memory.
            buffer = ArrayPool<byte>.Shared.Rent(Math.Clamp(length, 1, InitialBuffer));
            int done = 0;
            while (done < length)
            {
                if (done == buffer.Length)
                {
                    var bigger = ArrayPool<byte>.Shared.Rent((int)Math.Min((long)length, 2L * buffer.Length));
                    buffer.AsSpan(0, done).CopyTo(bigger);
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = bigger;
                }
                if (deadline != 0)
                {
                    long left = deadline - Environment.TickCount64;
                    if (left <= 0) throw new IOException($"timed out: a {(Envelope.BodyOneofCase)type} frame did not arrive within {FrameTimeout.TotalSeconds:0.#} s");
                    SetSocketTimeout((int)Math.Max(1, left));
                }
                int n = _stream.Read(buffer.AsSpan(done, Math.Min(length, buffer.Length) - done));
                if (n == 0) throw new EndOfStreamException("the peer closed the connection mid-frame");
                done += n;
            }
            if (Frame.Checksum(buffer.AsSpan(0, length)) != checksum)
                throw new ProtocolException("frame checksum mismatch: the stream is corrupt");
            Envelope e;
            try { e = Envelope.Parser.ParseFrom(buffer, 0, length); }
            catch (InvalidProtocolBufferException ex) { throw new ProtocolException($"undecodable message of type {type}: {ex.Message}", ex); }
            if ((ushort)e.BodyCase != type) throw new ProtocolException($"frame type {type} does not match its message ({e.BodyCase})");
            Interlocked.Add(ref _received, length + Frame.HeaderSize);
            Validate?.Invoke(e);
            return e;
        }
        catch (ObjectDisposedException e) { throw new IOException("connection closed", e); }
        catch (IOException e) when (e is not ProtocolException and not EndOfStreamException) { throw Explain(e, sending: false); }
        catch (InvalidOperationException e) { throw new IOException($"connection unusable: {e.Message}", e); }
        finally { if (buffer != null) ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>Says what happened instead of the socket's text ("Broken pipe", "Connection reset by peer").</summary>
    private IOException Explain(IOException e, bool sending)
    {
        var error = (e.InnerException as SocketException)?.SocketErrorCode;
        string what = error switch
        {
            SocketError.TimedOut or SocketError.WouldBlock => sending
                ? $"{Remote} has taken nothing off the connection for {_socket.SendTimeout / 1000.0:F0} s (the host is stopped, stalled or overloaded)"
                : $"{Remote} has sent nothing for {_socket.ReceiveTimeout / 1000.0:F0} s (the host is stopped, stalled or overloaded)",
            SocketError.ConnectionReset or SocketError.ConnectionAborted => $"{Remote} cut the connection (its process died or it gave up)",
            SocketError.Shutdown or SocketError.NotConnected => $"the connection to {Remote} is closed (the peer went away)",
            _ => e.Message,
        };
        return new IOException(what, e);
    }


    /// <summary>Checks every received message before anyone acts on it; throws <see cref="ProtocolException"/> to refuse it.</summary>
    public Action<Envelope>? Validate { get; set; }

    /// <summary>
    /// After refusing an oversized frame: reads and drops up to <paramref name="bytes"/> (bounded by
    /// <paramref name="within"/>) so the peer finishes its write and reads the refusal instead of a reset.
    /// </summary>
    public void Discard(long bytes, TimeSpan within)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(InitialBuffer);
        long until = Environment.TickCount64 + (long)within.TotalMilliseconds;
        try
        {
            while (bytes > 0 && Environment.TickCount64 < until)
            {
                SetSocketTimeout((int)Math.Max(1, until - Environment.TickCount64));
                int n = _stream.Read(buffer.AsSpan(0, (int)Math.Min(bytes, buffer.Length)));
                if (n == 0) return;
                bytes -= n;
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException) { }
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    private void SetSocketTimeout(int ms)
    {
        if (ms == _socketTimeoutMs) return;
        _socket.ReceiveTimeout = ms;
        _socketTimeoutMs = ms;
    }

    private void ReadExactly(Span<byte> destination, string eofMessage)
    {
        int done = 0;
        while (done < destination.Length)
        {
            int n = _stream.Read(destination[done..]);
            if (n == 0) throw new EndOfStreamException(eofMessage);
            done += n;
        }
    }

    /// <summary>How long a receive waits for the next frame to begin (infinite by default).</summary>
    public TimeSpan ReceiveTimeout { set => _idleTimeoutMs = value == Timeout.InfiniteTimeSpan ? 0 : (int)Math.Max(1, value.TotalMilliseconds); }

    /// <summary>How long a send may block on a peer that does not read (infinite by default).</summary>
    public TimeSpan SendTimeout { set => _socket.SendTimeout = value == Timeout.InfiniteTimeSpan ? 0 : (int)Math.Max(1, value.TotalMilliseconds); }

    /// <summary>Cuts the connection at once (RST): the peer sees an error, not an orderly end. Fault tests use it.</summary>
    public void Abort()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0) return;
        try { _socket.LingerState = new LingerOption(true, 0); } catch (SocketException) { } catch (ObjectDisposedException) { }
        _socket.Close(0);
        try { _stream.Dispose(); } catch (IOException) { } catch (ObjectDisposedException) { }
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0) return;
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
        try { _stream.Dispose(); } catch (IOException) { } catch (ObjectDisposedException) { }
        _socket.Dispose();
    }

    // ---- Handshake ----

    public static Envelope HelloMessage(Purpose purpose, uint version = Frame.ProtocolVersion) => new()
    {
        Hello = new Hello { ProtocolVersion = version, MinProtocolVersion = Frame.MinProtocolVersion, Purpose = purpose, Software = "lm " + typeof(Connection).Assembly.GetName().Version },
    };

    /// <summary>Client side: sends Hello, waits for the verdict; a refusal becomes a <see cref="ProtocolException"/>.</summary>
    public void ClientHandshake(Purpose purpose)
    {
        Send(HelloMessage(purpose));
        ReceiveTimeout = TimeSpan.FromSeconds(10);
        Envelope reply;
        try { reply = Receive(); }
        catch (ProtocolException e) { throw new ProtocolException($"{Remote} is not a LiveMigration host: {e.Message}", e); }
        catch (EndOfStreamException e) when (!Encrypted)
        {
            throw new ProtocolException($"{Remote} closed the connection at the handshake: a host with TLS accepts only TLS clients (--tls DIR or LM_TLS_DIR)", e);
        }
        ReceiveTimeout = Timeout.InfiniteTimeSpan;
        if (reply.BodyCase != Envelope.BodyOneofCase.HelloReply)
            throw new ProtocolException($"{Remote} answered the handshake with {reply.BodyCase}");
        if (!reply.HelloReply.Accepted)
            throw new ProtocolException($"{Remote} refused the connection: {reply.HelloReply.Error}");
        PeerVersion = reply.HelloReply.ProtocolVersion;
    }

    /// <summary>
    /// Server side: reads Hello, checks the version and asks <paramref name="authorize"/> whether this
    /// peer may open a connection for that purpose (null: yes; else why not), answers. Returns the
    /// purpose, or throws after telling the peer why.
    /// </summary>
    public Purpose ServerHandshake(TimeSpan? timeout = null, Func<Purpose, string?>? authorize = null)
    {
        ReceiveTimeout = timeout ?? TimeSpan.FromSeconds(10);
        Envelope hello;
        try { hello = Receive(); }
        catch (ProtocolException e)
        {
            Refuse($"not a LiveMigration client: {e.Message}");
            throw;
        }
        ReceiveTimeout = Timeout.InfiniteTimeSpan;
        if (hello.BodyCase != Envelope.BodyOneofCase.Hello)
        {
            Refuse($"expected Hello, got {hello.BodyCase}");
            throw new ProtocolException($"peer {Remote} did not start with Hello");
        }
        var h = hello.Hello;
        if (h.ProtocolVersion < Frame.MinProtocolVersion || h.MinProtocolVersion > Frame.ProtocolVersion)
        {
            string why = $"protocol version {h.ProtocolVersion} is not supported; this host speaks {Frame.MinProtocolVersion}..{Frame.ProtocolVersion}";
            Refuse(why);
            throw new ProtocolException($"refused {Remote}: {why}");
        }
        if (h.Purpose == Purpose.Unspecified)
        {
            Refuse("Hello names no purpose");
            throw new ProtocolException($"refused {Remote}: Hello names no purpose");
        }
        if (authorize?.Invoke(h.Purpose) is { } denied)
        {
            Refuse(denied);
            throw new ProtocolException($"refused {Remote} ({Peer}): {denied}");
        }
        PeerVersion = Math.Min(h.ProtocolVersion, Frame.ProtocolVersion);
        Send(new Envelope { HelloReply = new HelloReply { Accepted = true, ProtocolVersion = PeerVersion } });
        return h.Purpose;
    }

    private void Refuse(string error)
    {
        try { Send(new Envelope { HelloReply = new HelloReply { Accepted = false, ProtocolVersion = Frame.ProtocolVersion, Error = error } }); }
        catch (IOException) { }
    }
}

/// <summary>HOST:PORT parsing shared by the CLI and hosts.</summary>
public static class Address
{
    public static (string Host, int Port) Parse(string address)
    {
        int colon = address.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(address[(colon + 1)..], out int port) || port is < 0 or > 65535)
            throw new FormatException($"'{address}' is not HOST:PORT");
        string host = address[..colon].Trim('[', ']');
        return (host, port);
    }

    public static IPAddress Resolve(string host) => host switch
    {
        "" or "*" or "0.0.0.0" => IPAddress.Any,
        "localhost" => IPAddress.Loopback,
        _ => IPAddress.TryParse(host, out var ip) ? ip : Dns.GetHostAddresses(host).First(a => a.AddressFamily == AddressFamily.InterNetwork),
    };
}
