using System.Net;
using System.Net.Sockets;
using LiveMigration.Recorder.Serial;
using LiveMigration.Migration.Transport.Tls;

namespace LiveMigration.Migration.Hosting;

/// <summary>
/// A guest's UART served on a TCP port of its host. One client at a time (a new one replaces the
/// old); output produced while nobody is attached is kept (up to <see cref="BacklogLimit"/>) and
/// handed to the next client, so a console that follows a migrated guest misses nothing.
/// Input is queued by a pump thread; at switchover <see cref="Close"/> returns what the guest has
/// not consumed yet, and the destination's endpoint starts with it (<see cref="Prepend"/>).
/// On a host with TLS a client must complete mutual TLS and hold a role that may attach consoles
/// (<see cref="Authorization"/>); it is refused with one line otherwise.
/// </summary>
public sealed class ConsoleEndpoint : ISerialBackend
{
    public const int BacklogLimit = 1 << 20;

    private readonly TcpListener _listener;
    private readonly object _lock = new();
    private readonly Queue<byte> _input = new();
    private readonly List<byte> _backlog = [];
    private readonly byte[] _out = new byte[4096];
    private readonly AutoResetEvent _arrived = new(false);
    private int _outCount;
    private readonly TlsIdentity? _tls;
    private readonly TimeSpan _handshakeTimeout;
    private readonly Action<string>? _log;
    private Client? _client;
    private Thread? _pump;
    private bool _closed;

    /// <summary>An attached client: the socket (for shutdown) and the stream its bytes go through (TLS or plain).</summary>
    private sealed class Client(Socket socket, Stream stream, PeerIdentity peer) : IDisposable
    {
        public Socket Socket { get; } = socket;
        public Stream Stream { get; } = stream;
        public PeerIdentity Peer { get; } = peer;

        public void Send(ReadOnlySpan<byte> data) => Stream.Write(data);
        public void Dispose()
        {
            try { Stream.Dispose(); } catch (IOException) { } catch (ObjectDisposedException) { }
            Socket.Dispose();
        }
    }

    public ConsoleEndpoint(IPAddress address) : this(address, null, TimeSpan.FromSeconds(5), null) { }

    public ConsoleEndpoint(IPAddress address, TlsIdentity? tls, TimeSpan handshakeTimeout, Action<string>? log)
    {
        _tls = tls;
        _handshakeTimeout = handshakeTimeout;
        _log = log;
        _listener = new TcpListener(address, 0);
        _listener.Start();
        EndPoint = (IPEndPoint)_listener.LocalEndpoint;
        _ = AcceptLoopAsync();
    }

    public IPEndPoint EndPoint { get; }

    /// <summary>Total bytes the guest wrote (tests check continuity against it).</summary>
    public long OutputBytes { get; private set; }

    /// <summary>
    /// Accepts without a thread: a client still in its TLS handshake (or one that never finishes it)
    /// waits asynchronously and never holds up the operator who attaches next.
    /// </summary>
    private async Task AcceptLoopAsync()
    {
        while (true)
        {
            Socket socket;
            try { socket = await _listener.AcceptSocketAsync(); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException or InvalidOperationException) { return; } // stopped
            _ = AttachAsync(socket);
        }
    }

    private async Task AttachAsync(Socket socket)
    {
        var client = await AuthenticateAsync(socket);
        if (client == null) return;
        lock (_lock)
        {
            if (_closed) { client.Dispose(); return; }
            try { _client?.Socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
            _client?.Dispose();
            _client = client;
            // Hand over what was written while nobody listened.
            if (_backlog.Count > 0)
            {
                try { client.Send(_backlog.ToArray()); } catch (IOException) { }
                _backlog.Clear();
            }
            var pump = new Thread(() => Pump(client)) { IsBackground = true, Name = "console-input" };
            _pump = pump;
            pump.Start();
        }
    }

    /// <summary>The TLS handshake and the role check of a new console client; null (and the socket closed) when refused.</summary>
    private async Task<Client?> AuthenticateAsync(Socket socket)
    {
        try
        {
            socket.NoDelay = true;
            // A client that stops reading must not hold the guest's output path for long.
            socket.SendTimeout = 5000;
            if (_tls == null) return new Client(socket, new NetworkStream(socket, ownsSocket: false), PeerIdentity.Loopback);
            var (ssl, peer) = await _tls.AuthenticateAsServerAsync(new NetworkStream(socket, ownsSocket: false), _handshakeTimeout, CancellationToken.None);
            if (Authorization.Denial(peer, Request.Console) is { } denied)
            {
                _log?.Invoke($"refused a console client ({peer}): {denied}");
                try { await ssl.WriteAsync(System.Text.Encoding.UTF8.GetBytes($"lm: refused: {denied}\n")); } catch (IOException) { }
                await ssl.DisposeAsync();
                socket.Dispose();
                return null;
            }
            return new Client(socket, ssl, peer);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            _log?.Invoke($"refused a console client: {e.Message}");
            socket.Dispose();
            return null;
        }
    }

    private void Pump(Client client)
    {
        var buffer = new byte[4096];
        while (true)
        {
            int n;
            try { n = client.Stream.Read(buffer); }
            catch (IOException) { break; }
            catch (ObjectDisposedException) { break; }
            catch (InvalidOperationException) { break; }
            if (n == 0) break;
            lock (_lock) for (int i = 0; i < n; i++) _input.Enqueue(buffer[i]);
            _arrived.Set();
        }
        lock (_lock)
        {
            if (_client == client) { _client = null; }
        }
        client.Dispose();
    }

    public bool InputClosed => false; // another client can always attach

    public WaitHandle InputArrived => _arrived;

    /// <summary>Wakes a guest waiting for input without delivering any (a pause).</summary>
    public void Wake()
    {
        try { _arrived.Set(); }
        catch (ObjectDisposedException) { } // the console closed (host shutting down): nobody waits on it any more
    }

    public int Read(Span<byte> destination)
    {
        lock (_lock)
        {
            int n = Math.Min(destination.Length, _input.Count);
            for (int i = 0; i < n; i++) destination[i] = _input.Dequeue();
            return n;
        }
    }

    public int PendingInput { get { lock (_lock) return _input.Count; } }

    /// <summary>Input that arrived at the previous host and was not consumed there goes first.</summary>
    public void Prepend(ReadOnlySpan<byte> data)
    {
        if (data.IsEmpty) return;
        lock (_lock)
        {
            var rest = _input.ToArray();
            _input.Clear();
            foreach (byte b in data) _input.Enqueue(b);
            foreach (byte b in rest) _input.Enqueue(b);
        }
        _arrived.Set();
    }

    public void Write(byte value)
    {
        OutputBytes++;
        _out[_outCount++] = value;
        if (_outCount == _out.Length) Flush();
    }

    public void Flush()
    {
        lock (_lock)
        {
            if (_outCount == 0) return;
            var chunk = _out.AsSpan(0, _outCount);
            bool sent = false;
            if (_client != null)
            {
                try { _client.Send(chunk); sent = true; }
                catch (IOException) { }
                catch (ObjectDisposedException) { }
                catch (InvalidOperationException) { }
            }
            if (!sent && _backlog.Count + chunk.Length <= BacklogLimit) _backlog.AddRange(chunk.ToArray());
            _outCount = 0;
        }
    }

    /// <summary>
    /// Stops serving (the guest moved away or stopped): flushes output, disconnects the client,
    /// and returns the input that was accepted but not yet consumed by the guest, plus any output
    /// nobody has read yet (the destination replays it to its first client).
    /// </summary>
    public (byte[] Input, byte[] Backlog) Close()
    {
        Flush();
        Client? client;
        Thread? pump;
        lock (_lock)
        {
            _closed = true;
            client = _client;
            pump = _pump;
        }
        _listener.Stop();
        if (client != null)
        {
            // Read side first, so the pump drains what the kernel already holds before the socket goes.
            try { client.Socket.Shutdown(SocketShutdown.Send); } catch (SocketException) { } catch (ObjectDisposedException) { }
            try { client.Socket.Shutdown(SocketShutdown.Receive); } catch (SocketException) { } catch (ObjectDisposedException) { }
            pump?.Join(1000);
            client.Dispose();
        }
        lock (_lock)
        {
            var input = _input.ToArray();
            _input.Clear();
            var backlog = _backlog.ToArray();
            _backlog.Clear();
            return (input, backlog);
        }
    }

    /// <summary>Output carried over from the previous host, for the first client here.</summary>
    public void AddBacklog(ReadOnlySpan<byte> data)
    {
        lock (_lock)
        {
            if (_client != null) { try { _client.Send(data); return; } catch (IOException) { } catch (InvalidOperationException) { } }
            _backlog.AddRange(data.ToArray());
        }
    }

    public void Dispose()
    {
        Close();
        _arrived.Dispose();
    }
}
