using System.Net;
using System.Net.Sockets;

namespace LiveMigration.Recorder.Serial;

/// <summary>Serves the guest's UART on a TCP port (like QEMU's -serial tcp::PORT,server): one client.</summary>
public sealed class TcpSerialBackend : StreamSerialBackend
{
    private readonly TcpClient _client;
    private readonly TcpListener _listener;

    private TcpSerialBackend(TcpListener listener, TcpClient client)
        : base(client.GetStream(), client.GetStream())
    {
        _listener = listener;
        _client = client;
    }

    /// <summary>Listens on host:port and waits for the first client.</summary>
    public static TcpSerialBackend Listen(string host, int port, Action<IPEndPoint>? listening = null)
    {
        var address = host is "" or "*" ? IPAddress.Any : IPAddress.Parse(host == "localhost" ? "127.0.0.1" : host);
        var listener = new TcpListener(address, port);
        listener.Start();
        listening?.Invoke((IPEndPoint)listener.LocalEndpoint);
        var client = listener.AcceptTcpClient();
        client.NoDelay = true;
        return new TcpSerialBackend(listener, client);
    }

    public override void Dispose()
    {
        base.Dispose();
        _client.Dispose();
        _listener.Stop();
    }
}
