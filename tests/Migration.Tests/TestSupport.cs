using System.Text.RegularExpressions;
using System.Net.Sockets;
using System.Text;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

internal static class Guests
{
    /// <summary>guests/build (the guests are built once per test run when missing).</summary>
    public static string Dir => Path.GetDirectoryName(LiveMigration.Tests.Shared.RepoPaths.Guest("kv"))!;

    public static byte[] Elf(string name) => File.ReadAllBytes(LiveMigration.Tests.Shared.RepoPaths.Guest(name));
}

/// <summary>Two (or more) hosts side by side in this process, logging into the test output.</summary>
internal sealed class Hosts : IDisposable
{
    private readonly List<GuestHost> _hosts = [];
    private readonly ITestOutputHelper? _output;

    public Hosts(ITestOutputHelper? output, int count = 2, Func<FaultPoint, bool>? fault = null, ulong maxMemory = 16UL << 30, int goQueryMs = 100,
        Func<HostOptions, HostOptions>? configure = null)
    {
        _output = output;
        for (int i = 0; i < count; i++)
        {
            var options = new HostOptions { Log = Log, Fault = fault, MaxMemorySize = maxMemory, GoQueryInterval = TimeSpan.FromMilliseconds(goQueryMs) };
            _hosts.Add(new GuestHost(configure?.Invoke(options) ?? options));
        }
    }

    /// <summary>Takes a host down (a crashed source); its slot stays, disposed.</summary>
    public void Kill(int index) => _hosts[index].Dispose();

    private void Log(string s)
    {
        try { _output?.WriteLine(s); } catch (InvalidOperationException) { } // test already finished
    }

    public GuestHost this[int i] => _hosts[i];
    public GuestHost A => _hosts[0];
    public GuestHost B => _hosts[1];

    /// <summary>How many hosts run <paramref name="name"/> right now (the invariant says at most one, eventually exactly one).</summary>
    public int RunningCount(string name) => _hosts.Count(h => h.FindInstance(name) is { } g && g.State is GuestStatus.Running or GuestStatus.Paused or GuestStatus.Pausing);


    public string? RunningOn(string name) => _hosts.FirstOrDefault(h => h.FindInstance(name) != null)?.Address;

    public static void WaitUntil(Func<bool> condition, int timeoutMs = 10000, string what = "condition")
    {
        var until = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        while (!condition())
        {
            if (DateTime.UtcNow > until) throw new TimeoutException($"timed out waiting for {what}");
            Thread.Sleep(20);
        }
    }

    public MigrationReport Migrate(string name, GuestHost from, GuestHost to, string strategy, ulong bandwidth = 0, uint downtimeMs = 0)
    {
        using var c = HostClient.Connect(from.Address);
        var r = c.Migrate(new MigrateCommand { Name = name, Target = to.Address, Strategy = Engine.Strategies.Parse(strategy), BandwidthBytesPerSecond = bandwidth, DowntimeLimitMs = downtimeMs });
        Log($"report: success={r.Success} error='{r.Error}' downtime={r.DowntimeSeconds * 1000:F1} ms total={r.TotalSeconds * 1000:F1} ms digest={r.Digest:x16} icount={r.Icount}");
        return r;
    }

    public void Dispose()
    {
        foreach (var h in _hosts) h.Dispose();
    }
}

/// <summary>A console client that follows its guest across hosts and keeps everything it read.</summary>
internal sealed class ConsoleClient : IDisposable
{
    private readonly string _host;
    private readonly string _name;
    private readonly StringBuilder _text = new();
    private TcpClient? _tcp;
    private Thread? _reader;

    public ConsoleClient(string host, string name)
    {
        _host = host;
        _name = name;
        Connect();
    }

    public string CurrentHost { get; private set; } = "";

    private void Connect()
    {
        var until = DateTime.UtcNow.AddSeconds(10);
        while (true)
        {
            try
            {
                var (host, info) = HostClient.Locate(CurrentHost == "" ? _host : CurrentHost, _name);
                if (info.Status is GuestStatus.Running or GuestStatus.Exited or GuestStatus.Idle)
                {
                    var (h, p) = Transport.Address.Parse(info.Console);
                    var tcp = new TcpClient();
                    tcp.Connect(h, p);
                    tcp.NoDelay = true;
                    _tcp = tcp;
                    CurrentHost = host;
                    var reader = new Thread(() => Read(tcp)) { IsBackground = true };
                    _reader = reader;
                    reader.Start();
                    return;
                }
            }
            catch (Exception e) when (e is IOException or SocketException or HostException) { }
            if (DateTime.UtcNow > until) throw new TimeoutException($"cannot attach to the console of '{_name}'");
            Thread.Sleep(30);
        }
    }

    private void Read(TcpClient tcp)
    {
        var buffer = new byte[4096];
        try
        {
            var s = tcp.GetStream();
            int n;
            while ((n = s.Read(buffer)) > 0)
                lock (_text) _text.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }
        catch (IOException) { }
        catch (ObjectDisposedException) { }
    }

    public string Text { get { lock (_text) return _text.ToString(); } }

    /// <summary>True while the socket is open (it closes when the guest moves away).</summary>
    public bool Connected => _reader?.IsAlive == true;

    /// <summary>Reattaches wherever the guest runs now.</summary>
    /// <summary>Starts guest "g" from <paramref name="elf"/> on <paramref name="host"/> and returns its console once two numbered progress lines are out.</summary>
    public static ConsoleClient StartGuest(GuestHost host, string elf, ulong memory = 128 << 20)
    {
        using (var c = HostClient.Connect(host.Address)) c.Start("g", Guests.Elf(elf), memory, elf);
        var console = new ConsoleClient(host.Address, "g");
        console.WaitFor(t => Regex.Matches(t, @"(?m)^progress \d+").Count >= 2, 20000);
        return console;
    }

    /// <summary>Follows the guest to its new host and asserts its numbered lines go on without a gap.</summary>
    public void AssertContinuesAfterMove(string prefix, int more = 2)
    {
        int seen = Regex.Matches(Text, $@"(?m)^{prefix} \d+").Count;
        Follow();
        WaitFor(t => Regex.Matches(t, $@"(?m)^{prefix} \d+").Count >= seen + more, 20000);
        EndToEndTests.AssertContinuous(Text, prefix, seen + more);
    }

    public void Follow()
    {
        _tcp?.Dispose();
        _reader?.Join(2000);
        Connect();
    }

    public void Send(string text) => _tcp!.GetStream().Write(Encoding.ASCII.GetBytes(text));

    public void WaitFor(Func<string, bool> condition, int timeoutMs = 10000)
    {
        var until = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        while (!condition(Text))
        {
            if (DateTime.UtcNow > until) throw new TimeoutException($"console never showed what the test waits for; it has:\n{Tail(Text)}");
            Thread.Sleep(10);
        }
    }

    private static string Tail(string s) => s.Length > 600 ? s[^600..] : s;

    public void Dispose() => _tcp?.Dispose();
}
