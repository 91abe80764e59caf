using System.Buffers;
using System.Net;
using System.Net.Sockets;
using Google.Protobuf;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Transport;

/// <summary>What a byte on the wire was for; the report adds them up per category.</summary>
public enum ByteCategory { Checkpoint = 0, Log = 1, State = 2, Protocol = 3, Postcopy = 4 }

/// <summary>
/// One framed, full-duplex TCP connection: any thread may <see cref="Send"/> (sends are serialized),
/// one thread receives. Counts bytes per <see cref="ByteCategory"/>, headers included; bulk sends
/// pass the optional <see cref="TokenBucket"/>.
/// </summary>
public sealed class Connection : IDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly object _sendLock = new();
    private readonly long[] _sent = new long[5];
    private readonly byte[] _rxHeader = new byte[Frame.HeaderSize];
    private int _closed;

    public Connection(Socket socket)
    {
        _socket = socket;
        try
        {
            _socket.NoDelay = true;
            Remote = socket.RemoteEndPoint?.ToString() ?? "?";
        }
        catch (SocketException) { Remote = "?"; } // already reset by the peer: the first read says so
        _stream = new NetworkStream(socket, ownsSocket: true);
    }

    public string Remote { get; } = "?";
    public TokenBucket? Limiter { get; set; }
    /// <summary>Version the peer announced in its Hello (or its reply).</summary>
    public uint PeerVersion { get; private set; } = Frame.ProtocolVersion;

    public long Sent(ByteCategory c) => Interlocked.Read(ref _sent[(int)c]);
    public long SentTotal => _sent.Sum();
    private long _received;
    /// <summary>Bytes of whole frames received (headers included), the same measure as <see cref="SentTotal"/>.</summary>
    public long ReceivedTotal => Interlocked.Read(ref _received);

    public static Connection Connect(string address, TimeSpan? timeout = null)
    {
        var (host, port) = Address.Parse(address);
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
        try
        {
            using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(5));
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
        return new Connection(socket);
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
        finally { ArrayPool<byte>.Shared.Return(buffer); }
    }

    /// <summary>Reads the next envelope; EOF, garbage and timeouts are <see cref="IOException"/>s.</summary>
    public Envelope Receive()
    {
        try
        {
            ReadExactly(_rxHeader, eofMessage: "the peer closed the connection");
            int length = Frame.ParseHeader(_rxHeader, out _, out ushort type, out uint checksum);
            var buffer = ArrayPool<byte>.Shared.Rent(Math.Max(length, 1));
            try
            {
                ReadExactly(buffer.AsSpan(0, length), eofMessage: "the peer closed the connection mid-frame");
                if (Frame.Checksum(buffer.AsSpan(0, length)) != checksum)
                    throw new ProtocolException("frame checksum mismatch: the stream is corrupt");
                Envelope e;
                try { e = Envelope.Parser.ParseFrom(buffer, 0, length); }
                catch (InvalidProtocolBufferException ex) { throw new ProtocolException($"undecodable message of type {type}: {ex.Message}", ex); }
                if ((ushort)e.BodyCase != type) throw new ProtocolException($"frame type {type} does not match its message ({e.BodyCase})");
                Interlocked.Add(ref _received, length + Frame.HeaderSize);
                return e;
            }
            finally { ArrayPool<byte>.Shared.Return(buffer); }
        }
        catch (ObjectDisposedException e) { throw new IOException("connection closed", e); }
        catch (IOException e) when (e is not ProtocolException and not EndOfStreamException) { throw Explain(e, sending: false); }
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

    /// <summary>Receive timeout (infinite by default).</summary>
    public TimeSpan ReceiveTimeout { set => _socket.ReceiveTimeout = value == Timeout.InfiniteTimeSpan ? 0 : (int)value.TotalMilliseconds; }

    /// <summary>Send timeout (infinite by default): a peer that stops reading fails a send instead of blocking it forever.</summary>
    public TimeSpan SendTimeout { set => _socket.SendTimeout = value == Timeout.InfiniteTimeSpan ? 0 : (int)value.TotalMilliseconds; }

    /// <summary>Cuts the connection at once (RST): the peer sees an error, not an orderly end. Fault tests use it.</summary>
    public void Abort()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0) return;
        try { _socket.LingerState = new LingerOption(true, 0); } catch (SocketException) { } catch (ObjectDisposedException) { }
        _socket.Close(0);
        _stream.Dispose();
    }

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0) return;
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
        _stream.Dispose();
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
        ReceiveTimeout = Timeout.InfiniteTimeSpan;
        if (reply.BodyCase != Envelope.BodyOneofCase.HelloReply)
            throw new ProtocolException($"{Remote} answered the handshake with {reply.BodyCase}");
        if (!reply.HelloReply.Accepted)
            throw new ProtocolException($"{Remote} refused the connection: {reply.HelloReply.Error}");
        PeerVersion = reply.HelloReply.ProtocolVersion;
    }

    /// <summary>Server side: reads Hello, checks the version, answers. Returns the purpose, or throws after telling the peer why.</summary>
    public Purpose ServerHandshake()
    {
        ReceiveTimeout = TimeSpan.FromSeconds(10);
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
