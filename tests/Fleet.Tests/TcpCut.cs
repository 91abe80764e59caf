using System.Net;
using System.Net.Sockets;

namespace LiveMigration.Fleet.Tests;

/// <summary>
/// A loopback TCP proxy the test puts between one host and etcd. <see cref="Cut"/> is a silent
/// partition: both sides stay alive and connected, but no byte gets through (what is sent is
/// dropped, new connections are accepted and never answered), so only timeouts tell.
/// <see cref="Heal"/> closes the connections that lost bytes (as their timeouts would) and lets new
/// ones through again.
/// </summary>
public sealed class TcpCut : IDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly int _target;
    private readonly List<TcpClient> _open = [];
    private volatile bool _cut, _disposed;

    public TcpCut(string targetUrl)
    {
        _target = new Uri(targetUrl).Port;
        _listener.Start();
        new Thread(AcceptLoop) { IsBackground = true, Name = "tcp-cut" }.Start();
    }

    public string Url => $"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}";

    private void AcceptLoop()
    {
        while (!_disposed)
        {
            TcpClient client;
            try { client = _listener.AcceptTcpClient(); }
            catch (Exception e) when (e is SocketException or ObjectDisposedException) { return; }
            lock (_open) _open.Add(client);
            if (_cut) { Pump(client, null); continue; } // accepted, never answered
            var upstream = new TcpClient();
            try { upstream.Connect(IPAddress.Loopback, _target); }
            catch (SocketException) { client.Dispose(); upstream.Dispose(); continue; }
            lock (_open) _open.Add(upstream);
            Pump(client, upstream);
            Pump(upstream, client);
        }
    }

    private void Pump(TcpClient from, TcpClient? to) => new Thread(() =>
    {
        var buffer = new byte[16384];
        try
        {
            var input = from.GetStream();
            int n;
            while ((n = input.Read(buffer)) > 0)
                if (!_cut && to != null) to.GetStream().Write(buffer, 0, n); // cut: dropped on the floor
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException) { }
        from.Dispose();
        to?.Dispose();
    }) { IsBackground = true }.Start();

    /// <summary>From now on nothing passes either way; both ends see silence.</summary>
    public void Cut() => _cut = true;

    /// <summary>The partition ends: connections that lost bytes are closed, new ones pass.</summary>
    public void Heal()
    {
        CloseAll();
        _cut = false;
    }

    private void CloseAll()
    {
        lock (_open)
        {
            foreach (var c in _open) c.Dispose();
            _open.Clear();
        }
    }

    public void Dispose()
    {
        _disposed = true;
        _cut = true;
        _listener.Stop();
        CloseAll();
    }
}
