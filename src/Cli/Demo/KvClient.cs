using System.Net.Sockets;
using System.Text;
using LiveMigration.Migration.Hosting;

namespace LiveMigration.Cli.Demo;

/// <summary>
/// The demo workload (the `kv` guest under load), shared by `lm demo`, the benches and the tests; not
/// part of the engine. A kv client over the guest's console that follows it across hosts. A SET counts as acknowledged
/// only once "OK" came back; a request whose answer was lost with a moving console is retried
/// (SET and GET are idempotent) after a resync: the client voids any half line the guest holds, sets a fresh nonce, reads it back and
/// drops every line before it, so answers to requests that did reach the guest twice (once through
/// the moving console, once retried) never pair up with the wrong request.
/// </summary>
public sealed class KvClient : IDisposable
{
    private readonly string _startHost;
    private readonly string _name;
    private string _host;
    private TcpClient? _tcp;
    private Stream? _stream;
    private LineReader? _reader;
    private readonly object _lock = new();
    private readonly LiveMigration.Migration.Transport.Tls.TlsIdentity? _tls;

    /// <param name="tls">An operator identity when the hosts run with TLS (the console needs one).</param>
    public KvClient(string host, string name, LiveMigration.Migration.Transport.Tls.TlsIdentity? tls = null)
    {
        _tls = tls;
        _startHost = host;
        _host = host;
        _name = name;
    }

    /// <summary>How long a request waits for its answer before it counts as lost (and is retried).</summary>
    public const int ReplyTimeoutMs = 5000;

    public Dictionary<string, string> Acknowledged { get; } = [];
    public int Reconnects { get; private set; }
    public int Retries { get; private set; }
    public string CurrentHost => _host;

    private void Connect()
    {
        _tcp?.Dispose();
        var until = DateTime.UtcNow.AddSeconds(15);
        while (true)
        {
            try
            {
                var (host, info) = HostClient.Locate(_host, _name, tls: _tls);
                if (info.Status == LiveMigration.Migration.Protocol.GuestStatus.Running)
                {
                    var (h, p) = LiveMigration.Migration.Transport.Address.Parse(info.Console);
                    var tcp = new TcpClient { NoDelay = true, ReceiveTimeout = ReplyTimeoutMs };
                    tcp.Connect(h, p);
                    _tcp = tcp;
                    _stream = _tls == null ? tcp.GetStream() : _tls.AuthenticateAsClient(tcp.GetStream(), h).Stream;
                    _reader = new LineReader(_stream);
                    _host = host;
                    return;
                }
            }
            catch (Exception e) when (e is IOException or SocketException or HostException) { }
            if (DateTime.UtcNow > until) throw new TimeoutException($"cannot reach the console of '{_name}'");
            Thread.Sleep(20);
        }
    }

    /// <summary>Reads the console until the guest says 'kv ready' (a Linux guest boots first: give it time).</summary>
    public void WaitReady(int timeoutMs = ReplyTimeoutMs)
    {
        lock (_lock)
        {
            Connect();
            _tcp!.ReceiveTimeout = timeoutMs;
            try
            {
                while (true)
                {
                    string? line = _reader!.ReadLine() ?? throw new IOException("console closed before 'kv ready'");
                    if (line.Contains("kv ready")) return;
                }
            }
            finally { _tcp.ReceiveTimeout = ReplyTimeoutMs; }
        }
    }

    /// <summary>Sends one request and reads one answer line, reconnecting and retrying when the console moves.</summary>
    public string Request(string line)
    {
        lock (_lock)
        {
            for (int attempt = 0; ; attempt++)
            {
                try
                {
                    if (_tcp == null) { Connect(); Reconnects++; Resync(); }
                    _stream!.Write(Encoding.ASCII.GetBytes(line + "\n"));
                    while (true)
                    {
                        string? answer = _reader!.ReadLine() ?? throw new IOException("console closed");
                        if (answer.Length == 0 || answer.StartsWith("tick") || answer.Contains("kv ready")) continue;
                        return answer;
                    }
                }
                catch (IOException) when (attempt < 20)
                {
                    _tcp?.Dispose();
                    _tcp = null;
                    Retries++;
                }
            }
        }
    }

    private int _nonce;

    /// <summary>
    /// Longer than any line the kv guests take (256): whatever the guest holds of a line whose rest was
    /// lost with a broken connection (a crash, a takeover without the console's bytes) becomes an
    /// overlong line, answered ERR and applied never, instead of a prefix glued to the next request.
    /// </summary>
    private static readonly string LineBreaker = new string('#', 300) + "\n";

    private void Resync()
    {
        string nonce = $"sync{Environment.TickCount64}-{++_nonce}";
        _stream!.Write(Encoding.ASCII.GetBytes($"{LineBreaker}SET __sync {nonce}\nGET __sync\n"));
        while (true)
        {
            string? line = _reader!.ReadLine() ?? throw new IOException("console closed during resync");
            if (line == nonce) return;
        }
    }

    public void Set(string key, string value)
    {
        string answer = Request($"SET {key} {value}");
        if (answer != "OK") throw new InvalidDataException($"SET {key}: got '{answer}'");
        Acknowledged[key] = value;
        SetsAcknowledged++;
    }

    public long SetsAcknowledged { get; private set; }
    public long GetsChecked { get; private set; }

    public string Get(string key) => Request($"GET {key}");

    public const int KeySpace = 1000;

    /// <summary>Writes and reads keys until cancelled.</summary>
    public void RunLoad(CancellationToken stop)
    {
        for (int i = 0; !stop.IsCancellationRequested; i++)
        {
            // 1000 keys, rewritten with new values: the table never fills, and a stale value is caught.
            Set($"k{i % KeySpace}", $"v{i}");
            if (i % 4 == 3)
            {
                string k = $"k{i * 7919 % KeySpace}";
                string got = Get(k);
                if (Acknowledged.TryGetValue(k, out var want) && got != want) throw new InvalidDataException($"GET {k}: '{got}', expected '{want}'");
                GetsChecked++;
            }
        }
    }

    /// <summary>Every acknowledged SET read back; returns the keys that came back wrong.</summary>
    public List<string> VerifyAll()
    {
        var bad = new List<string>();
        foreach (var (k, v) in Acknowledged)
            if (Get(k) != v) bad.Add(k);
        return bad;
    }

    public void Dispose() => _tcp?.Dispose();

    /// <summary>
    /// Whole lines only: a console that moves mid-line ends the old connection after a partial line,
    /// which must not pass for an answer (StreamReader.ReadLine returns it as one). The rest of that
    /// line arrives on the new connection, where the resync skips it.
    /// </summary>
    private sealed class LineReader(Stream stream)
    {
        private readonly byte[] _buffer = new byte[4096];
        private int _start, _end;
        private readonly StringBuilder _line = new();

        /// <returns>The next line without its newline, or null at the end of the stream between lines.</returns>
        public string? ReadLine()
        {
            while (true)
            {
                int nl = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
                if (nl >= 0)
                {
                    _line.Append(Encoding.ASCII.GetString(_buffer, _start, nl - _start));
                    _start = nl + 1;
                    string line = _line.ToString().TrimEnd('\r');
                    _line.Clear();
                    return line;
                }
                _line.Append(Encoding.ASCII.GetString(_buffer, _start, _end - _start));
                _start = _end = 0;
                int n = stream.Read(_buffer, 0, _buffer.Length);
                if (n == 0)
                {
                    if (_line.Length == 0) return null;
                    throw new IOException($"console closed mid-line ('{_line}')");
                }
                _end = n;
            }
        }
    }
}
