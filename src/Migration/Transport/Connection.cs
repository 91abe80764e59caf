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
    private readonly SemaphoreSlim _sendGate = new(1, 1); // sends are serialized, sync or async
    private readonly long[] _sent = new long[6];
    private readonly byte[] _rxHeader = new byte[Frame.HeaderSize];
    private int _closed;
    private int _idleTimeoutMs; // 0: infinite
    private int _socketTimeoutMs;
    private int _sendTimeoutMs; // 0: infinite

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
    public static Connection Accept(Socket socket, TlsIdentity? tls, TimeSpan handshakeTimeout) =>
        AcceptAsync(socket, tls, handshakeTimeout, CancellationToken.None).AsTask().GetAwaiter().GetResult();

    /// <summary><see cref="Accept"/> without holding a thread while the client takes its time.</summary>
    public static async ValueTask<Connection> AcceptAsync(Socket socket, TlsIdentity? tls, TimeSpan handshakeTimeout, CancellationToken cancel)
    {
        if (tls == null) return new Connection(socket);
        var net = new NetworkStream(socket, ownsSocket: true);
        try
        {
            var (ssl, peer) = await tls.AuthenticateAsServerAsync(net, handshakeTimeout, cancel);
            return new Connection(socket, ssl, peer);
        }
        catch
        {
            await net.DisposeAsync();
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
            _sendGate.Wait(CancellationToken.None);
            try { _stream.Write(frame); }
            finally { _sendGate.Release(); }
            Interlocked.Add(ref _sent[(int)category], size + Frame.HeaderSize);
        }
        catch (ObjectDisposedException e) { throw new IOException("connection closed", e); }
        catch (IOException e) when (e is not ProtocolException) { throw Explain(e, sending: true); }
        catch (InvalidOperationException e) { throw new IOException($"connection unusable: {e.Message}", e); } // SslStream after a failed write
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>
    /// A reply on a connection served without a thread of its own: a peer that takes nothing off the
    /// connection for <see cref="SendTimeout"/> gets an <see cref="IOException"/>, no thread waits for it.
    /// </summary>
    public async ValueTask SendAsync(Envelope message, CancellationToken cancel = default)
    {
        int size = message.CalculateSize();
        var buffer = ArrayPool<byte>.Shared.Rent(Frame.HeaderSize + size);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        if (_sendTimeoutMs != 0) timeout.CancelAfter(_sendTimeoutMs);
        bool entered = false;
        try
        {
            var payload = buffer.AsSpan(Frame.HeaderSize, size);
            message.WriteTo(payload);
            Frame.WriteHeader(buffer.AsSpan(0, Frame.HeaderSize), (ushort)message.BodyCase, payload);
            await _sendGate.WaitAsync(timeout.Token);
            entered = true;
            await _stream.WriteAsync(buffer.AsMemory(0, Frame.HeaderSize + size), timeout.Token);
            Interlocked.Add(ref _sent[(int)ByteCategory.Protocol], size + Frame.HeaderSize);
        }
        catch (OperationCanceledException e) when (!cancel.IsCancellationRequested)
        {
            throw new IOException($"{Remote} has taken nothing off the connection for {_sendTimeoutMs / 1000.0:F0} s (the host is stopped, stalled or overloaded)", e);
        }
        catch (ObjectDisposedException e) { throw new IOException("connection closed", e); }
        catch (IOException e) when (e is not ProtocolException) { throw Explain(e, sending: true); }
        catch (InvalidOperationException e) { throw new IOException($"connection unusable: {e.Message}", e); }
        finally
        {
            if (entered) _sendGate.Release();
            ArrayPool<byte>.Shared.Return(buffer);
        }
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
            buffer = ArrayPool<byte>.Shared.Rent(Math.Clamp(length, 1, InitialBuffer));
            int done = 0;
            bool armed = false;
            while (done < length)
            {
                Grow(ref buffer, done, length);
                if (deadline != 0)
                {
                    long left = deadline - Environment.TickCount64;
                    if (left <= 0) throw FrameTimedOut(type);
                    // Re-armed only when the deadline has come 10 % closer: over TLS every 16 KiB record is a
                    // read of its own, and a socket option per record showed in the transfer's CPU.
                    if (!armed || left < _socketTimeoutMs - Math.Max(20, _socketTimeoutMs / 10)) SetSocketTimeout((int)Math.Max(1, left));
                    armed = true;
                }
                int n = _stream.Read(buffer.AsSpan(done, Math.Min(length, buffer.Length) - done));
                if (n == 0) throw new EndOfStreamException("the peer closed the connection mid-frame");
                done += n;
            }
            return Decode(buffer, length, type, checksum);
        }
        catch (ObjectDisposedException e) { throw new IOException("connection closed", e); }
        catch (IOException e) when (e is not ProtocolException and not EndOfStreamException) { throw Explain(e, sending: false); }
        catch (InvalidOperationException e) { throw new IOException($"connection unusable: {e.Message}", e); }
        finally { if (buffer != null) ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>
    /// <see cref="Receive"/> without a thread waiting: the next frame must begin within <paramref name="wait"/>
    /// (infinite: <see cref="Timeout.InfiniteTimeSpan"/>) and then arrive whole within <see cref="FrameTimeout"/>.
    /// </summary>
    public async ValueTask<Envelope> ReceiveAsync(TimeSpan wait, CancellationToken cancel = default)
    {
        byte[]? buffer = null;
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        ushort type = 0;
        bool inFrame = false;
        try
        {
            if (wait != Timeout.InfiniteTimeSpan) timeout.CancelAfter(wait);
            int got = 0;
            while (got < Frame.HeaderSize)
            {
                int n = await _stream.ReadAsync(_rxHeader.AsMemory(got), timeout.Token);
                if (n == 0) throw new EndOfStreamException(got == 0 ? "the peer closed the connection" : "the peer closed the connection mid-frame");
                got += n;
            }
            int length = Frame.ParseHeader(_rxHeader, out _, out type, out uint checksum);
            inFrame = true;
            timeout.CancelAfter(FrameTimeout); // rescheduled: the frame's own deadline from its header on
            buffer = ArrayPool<byte>.Shared.Rent(Math.Clamp(length, 1, InitialBuffer));
            int done = 0;
            while (done < length)
            {
                Grow(ref buffer, done, length);
                int n = await _stream.ReadAsync(buffer.AsMemory(done, Math.Min(length, buffer.Length) - done), timeout.Token);
                if (n == 0) throw new EndOfStreamException("the peer closed the connection mid-frame");
                done += n;
            }
            return Decode(buffer, length, type, checksum);
        }
        catch (OperationCanceledException e) when (!cancel.IsCancellationRequested)
        {
            throw inFrame ? FrameTimedOut(type) : new IdleTimeoutException($"{Remote} has sent nothing for {wait.TotalSeconds:0.#} s", e);
        }
        catch (ObjectDisposedException e) { throw new IOException("connection closed", e); }
        catch (IOException e) when (e is not ProtocolException and not EndOfStreamException) { throw Explain(e, sending: false); }
        catch (InvalidOperationException e) { throw new IOException($"connection unusable: {e.Message}", e); }
        finally { if (buffer != null) ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>Grown as bytes arrive: a header's claim alone never pins memory.</summary>
    private static void Grow(ref byte[] buffer, int done, int length)
    {
        if (done < buffer.Length) return;
        var bigger = ArrayPool<byte>.Shared.Rent((int)Math.Min((long)length, 2L * buffer.Length));
        buffer.AsSpan(0, done).CopyTo(bigger);
        ArrayPool<byte>.Shared.Return(buffer);
        buffer = bigger;
    }

    private IOException FrameTimedOut(ushort type) =>
        new($"timed out: a {(Envelope.BodyOneofCase)type} frame did not arrive within {FrameTimeout.TotalSeconds:0.#} s");

    /// <summary>A whole frame's payload: checksum, decode, type check, <see cref="Validate"/>.</summary>
    private Envelope Decode(byte[] buffer, int length, ushort type, uint checksum)
    {
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
    public async ValueTask DiscardAsync(long bytes, TimeSpan within)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(InitialBuffer);
        using var timeout = new CancellationTokenSource(within);
        try
        {
            while (bytes > 0)
            {
                int n = await _stream.ReadAsync(buffer.AsMemory(0, (int)Math.Min(bytes, buffer.Length)), timeout.Token);
                if (n == 0) return;
                bytes -= n;
            }
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException or OperationCanceledException) { }
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
    public TimeSpan SendTimeout { set => _socket.SendTimeout = _sendTimeoutMs = value == Timeout.InfiniteTimeSpan ? 0 : (int)Math.Max(1, value.TotalMilliseconds); }

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
    /// Server side: reads Hello (within <paramref name="timeout"/>, no thread waiting), checks the
    /// version and asks <paramref name="authorize"/> whether this peer may open a connection for that
    /// purpose (null: yes; else why not), answers. Returns the purpose, or throws after telling the peer why.
    /// </summary>
    public async ValueTask<Purpose> ServerHandshakeAsync(TimeSpan timeout, Func<Purpose, string?>? authorize = null, CancellationToken cancel = default)
    {
        Envelope hello;
        try { hello = await ReceiveAsync(timeout, cancel); }
        catch (ProtocolException e)
        {
            await RefuseAsync($"not a LiveMigration client: {e.Message}");
            throw;
        }
        string? why = null;
        var h = hello.Hello;
        if (hello.BodyCase != Envelope.BodyOneofCase.Hello) why = $"expected Hello, got {hello.BodyCase}";
        else if (h.ProtocolVersion < Frame.MinProtocolVersion || h.MinProtocolVersion > Frame.ProtocolVersion)
            why = $"protocol version {h.ProtocolVersion} is not supported; this host speaks {Frame.MinProtocolVersion}..{Frame.ProtocolVersion}";
        else if (h.Purpose == Purpose.Unspecified) why = "Hello names no purpose";
        else if (authorize?.Invoke(h.Purpose) is { } denied) why = denied;
        if (why != null)
        {
            await RefuseAsync(why);
            throw new ProtocolException($"refused {Remote} ({Peer}): {why}");
        }
        PeerVersion = Math.Min(h.ProtocolVersion, Frame.ProtocolVersion);
        await SendAsync(new Envelope { HelloReply = new HelloReply { Accepted = true, ProtocolVersion = PeerVersion } }, cancel);
        return h.Purpose;
    }

    private async ValueTask RefuseAsync(string error)
    {
        try { await SendAsync(new Envelope { HelloReply = new HelloReply { Accepted = false, ProtocolVersion = Frame.ProtocolVersion, Error = error } }); }
        catch (IOException) { }
    }
}

/// <summary>No frame began within the wait a receive was given (the peer is idle or gone).</summary>
public sealed class IdleTimeoutException(string message, Exception inner) : IOException(message, inner);

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
