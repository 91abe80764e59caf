using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using LiveMigration.Fleet.Etcd;

namespace LiveMigration.Fleet.Tests;

/// <summary>
/// Real etcd processes on loopback for one test: one member, or three for the leader-loss tests.
/// Each member has its own data directory under a temporary one; every process is killed on dispose.
/// </summary>
public sealed class EtcdCluster : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), $"lm-etcd-{Guid.NewGuid():N}");
    private readonly Process?[] _members;
    private readonly int[] _clientPorts;

    public EtcdCluster(int members = 1)
    {
        if (!File.Exists("/usr/bin/etcd") && FindOnPath("etcd") == null)
            throw new InvalidOperationException("etcd is not installed: run scripts/setup.sh (Debian package etcd-server)");
        _members = new Process?[members];
        _clientPorts = new int[members];
        var peerPorts = new int[members];
        for (int i = 0; i < members; i++) { _clientPorts[i] = FreePort(); peerPorts[i] = FreePort(); }
        string cluster = string.Join(",", Enumerable.Range(0, members).Select(i => $"m{i}=http://127.0.0.1:{peerPorts[i]}"));
        for (int i = 0; i < members; i++)
        {
            var psi = new ProcessStartInfo(FindOnPath("etcd") ?? "/usr/bin/etcd") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (var a in new[]
            {
                "--name", $"m{i}", "--data-dir", Path.Combine(_dir, $"m{i}"),
                "--listen-client-urls", Url(_clientPorts[i]), "--advertise-client-urls", Url(_clientPorts[i]),
                "--listen-peer-urls", Url(peerPorts[i]), "--initial-advertise-peer-urls", Url(peerPorts[i]),
                "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", Path.GetFileName(_dir),
                "--heartbeat-interval", "50", "--election-timeout", "500", "--logger", "zap", "--log-level", "error",
            }) psi.ArgumentList.Add(a);
            _starts.Add(psi);
            Launch(i);
        }
        WaitHealthy(TimeSpan.FromSeconds(20));
    }

    private readonly List<ProcessStartInfo> _starts = [];

    private void Launch(int i)
    {
        var p = Process.Start(_starts[i])!;
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, e) => { if (e.Data != null) lock (_log) _log.Add($"m{i}: {e.Data}"); };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        _members[i] = p;
    }

    /// <summary>Starts a killed member again on its data directory (its leases are renewed by the new leader term).</summary>
    public void Restart(int member)
    {
        Launch(member);
        WaitHealthy(TimeSpan.FromSeconds(20));
    }

    private readonly List<string> _log = [];

    private static string Url(int port) => $"http://127.0.0.1:{port}";

    /// <summary>"URL,URL,..." of every member, as `--etcd` takes it.</summary>
    public string Endpoints => string.Join(",", _clientPorts.Select(Url));

    public string Endpoint(int member) => Url(_clientPorts[member]);

    public static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        int port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    private static string? FindOnPath(string exe) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => Path.Combine(d, exe)).FirstOrDefault(File.Exists);

    /// <summary>Waits until a put through every live member succeeds (a leader is elected).</summary>
    public void WaitHealthy(TimeSpan timeout)
    {
        var until = DateTime.UtcNow + timeout;
        for (int i = 0; i < _members.Length; i++)
        {
            if (_members[i] is not { HasExited: false }) continue;
            using var c = new EtcdClient([Endpoint(i)]) { CallBudget = TimeSpan.FromMilliseconds(500) };
            while (true)
            {
                try { c.Put("/health", "ok"); break; }
                catch (EtcdUnavailableException) when (DateTime.UtcNow < until) { Thread.Sleep(100); }
                catch (EtcdUnavailableException e) { throw new TimeoutException($"etcd member m{i} not healthy: {e.Message}\n{string.Join("\n", _log)}"); }
            }
        }
    }

    /// <summary>The index of the member that leads now.</summary>
    public int Leader()
    {
        // Asked again for a while: a status call can time out on a loaded machine, or land mid-election.
        var until = DateTime.UtcNow.AddSeconds(15);
        while (true)
        {
            for (int i = 0; i < _members.Length; i++)
            {
                if (_members[i] is not { HasExited: false }) continue;
                using var c = new EtcdClient([Endpoint(i)]);
                try
                {
                    var s = c.Status(0);
                    if (s.Leader == s.Header.MemberId) return i;
                }
                catch (Exception e) when (e is Grpc.Core.RpcException or LiveMigration.Fleet.Etcd.EtcdUnavailableException) { }
            }
            if (DateTime.UtcNow > until) throw new InvalidOperationException("no etcd member leads");
            Thread.Sleep(100);
        }
    }

    /// <summary>kill -9 of one member.</summary>
    public void Kill(int member)
    {
        _members[member]?.Kill();
        _members[member]?.WaitForExit(5000);
    }

    public void Dispose()
    {
        foreach (var p in _members)
        {
            if (p == null) continue;
            try { if (!p.HasExited) { p.Kill(); p.WaitForExit(5000); } } catch (InvalidOperationException) { }
            p.Dispose();
        }
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }
}
