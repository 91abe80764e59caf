using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using LiveMigration.Guest.Debug;

namespace LiveMigration.Replayer.Gdb;

/// <summary>
/// A gdb remote-protocol server over a <see cref="ReplayDebugger"/>: one connection at a time.
/// A reader thread decodes what gdb sends (so an interrupt byte stops a running continue at once);
/// the serving thread answers packets in order. Notices from the debugger (fork, end of replay)
/// go to stderr at once and to gdb's console as <c>O</c> packets before the next stop reply.
/// </summary>
public sealed class GdbServer
{
    private readonly ReplayDebugger _debugger;
    private readonly Action<string> _log;
    private readonly ConcurrentQueue<string> _notices = new();
    private readonly GdbCommands _commands;
    private bool _noAck;

    public GdbServer(ReplayDebugger debugger, Action<string>? log = null)
    {
        _debugger = debugger;
        _log = log ?? (s => Console.Error.WriteLine("lm: " + s));
        _commands = new GdbCommands(debugger, _notices);
        debugger.Notice = s => { _log(s); _notices.Enqueue(s); };
    }

    /// <summary>Parses HOST:PORT (port 0 picks a free one).</summary>
    public static IPEndPoint ParseEndpoint(string hostPort)
    {
        int colon = hostPort.LastIndexOf(':');
        if (colon < 0 || !int.TryParse(hostPort.AsSpan(colon + 1), out int port)) throw new ArgumentException($"'{hostPort}' is not HOST:PORT");
        string host = hostPort[..colon];
        var address = host is "" or "*" ? IPAddress.Any : host == "localhost" ? IPAddress.Loopback : IPAddress.Parse(host);
        return new IPEndPoint(address, port);
    }

    /// <summary>Accepts one gdb connection on <paramref name="listener"/> and serves it until gdb detaches, kills or disconnects.</summary>
    public void ServeOne(TcpListener listener)
    {
        using var client = listener.AcceptTcpClient();
        client.NoDelay = true;
        _log($"gdb connected from {client.Client.RemoteEndPoint}");
        Serve(client.GetStream());
        _log("gdb disconnected");
    }

    /// <summary>Serves one gdb on <paramref name="stream"/> until it detaches, kills or closes the connection.</summary>
    public void Serve(Stream stream)
    {
        var items = new BlockingCollection<RspItem>();
        var reader = new Thread(() =>
        {
            var decoder = new RspDecoder();
            var buffer = new byte[4096];
            try
            {
                int n;
                while ((n = stream.Read(buffer)) > 0)
                    for (int i = 0; i < n; i++)
                        if (decoder.Feed(buffer[i]) is { } item)
                        {
                            if (item.Kind == RspItemKind.Interrupt) _debugger.Interrupt();
                            items.Add(item);
                        }
            }
            catch (IOException) { }
            catch (ObjectDisposedException) { }
            finally { items.CompleteAdding(); }
        }) { IsBackground = true, Name = "gdb-reader" };
        reader.Start();

        byte[]? lastSent = null;
        foreach (var item in items.GetConsumingEnumerable())
        {
            switch (item.Kind)
            {
                case RspItemKind.Nack when lastSent != null: stream.Write(lastSent); continue;
                case RspItemKind.BadChecksum: if (!_noAck) stream.WriteByte((byte)'-'); continue;
                case RspItemKind.Packet: break;
                default: continue; // acks, and interrupts while nothing runs
            }
            if (!_noAck) stream.WriteByte((byte)'+');
            var reply = _commands.Handle(item.Payload, out var action);
            if (reply != null)
            {
                foreach (var o in _commands.TakeConsoleOutput()) stream.Write(RspFraming.Encode(o));
                lastSent = RspFraming.Encode(reply);
                stream.Write(lastSent);
                stream.Flush();
            }
            if (item.Payload == "QStartNoAckMode") _noAck = true;
            if (action == GdbCommands.After.Close) { stream.Close(); break; }
        }
    }
}
