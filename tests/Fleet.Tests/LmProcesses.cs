using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace LiveMigration.Fleet.Tests;

/// <summary>A running `lm host` process and what it logged.</summary>
public sealed class LmHost(Process process, string address)
{
    private readonly List<string> _log = [];
    public Process Process { get; } = process;
    public string Address { get; } = address;
    public int Pid => Process.Id;

    internal void Add(string line) { lock (_log) _log.Add(line); }

    public string Log { get { lock (_log) return string.Join("\n", _log); } }

    public bool Logged(string text) { lock (_log) return _log.Any(l => l.Contains(text)); }

    public void WaitLogged(string text, int timeoutMs = 30000) =>
        Fleet.Wait(() => Logged(text), timeoutMs, $"'{text}' in the log of {Address}");

    /// <summary>kill -9.</summary>
    public void Kill()
    {
        if (!Process.HasExited) Process.Kill();
        Process.WaitForExit(5000);
    }

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    private const int SIGSTOP = 19, SIGCONT = 18, SIGTERM = 15;

    public void Stop() => Assert.Equal(0, kill(Pid, SIGSTOP));
    public void Continue() => Assert.Equal(0, kill(Pid, SIGCONT));
    /// <summary>A clean exit (deregisters).</summary>
    public void Terminate() { Assert.Equal(0, kill(Pid, SIGTERM)); Process.WaitForExit(10000); }
}

/// <summary>`lm host` processes in one fleet and the `lm` CLI, as an operator drives them; everything is killed on dispose.</summary>
public sealed class Fleet(ITestOutputHelper output, EtcdCluster etcd) : IDisposable
{
    private readonly List<Process> _processes = [];
    private static string Lm => Path.Combine(AppContext.BaseDirectory, "lm.dll");
    public string CheckpointDir { get; } = Path.Combine(Path.GetTempPath(), $"lm-ckpt-{Guid.NewGuid():N}");
    public EtcdCluster Etcd => etcd;

    private Process Spawn(IEnumerable<string> args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false };
        psi.ArgumentList.Add(Lm);
        foreach (var a in args) psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        lock (_processes) _processes.Add(p);
        return p;
    }

    private void Out(string s) { try { output.WriteLine(s); } catch (InvalidOperationException) { } }

    public LmHost StartHost(double leaseTtl = 3, params string[] extra) => StartHostVia(etcd.Endpoints, leaseTtl, extra);

    /// <summary>A host that reaches etcd through <paramref name="etcdUrls"/> (a proxy the test can cut).</summary>
    public LmHost StartHostVia(string etcdUrls, double leaseTtl, params string[] extra)
    {
        var args = new List<string> { "host", "--listen", "127.0.0.1:0", "--etcd", etcdUrls, "--lease-ttl", leaseTtl.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--checkpoints", CheckpointDir, "--checkpoint-interval", "1", "--capacity", "1G" };
        args.AddRange(extra);
        var p = Spawn(args);
        string line = p.StandardOutput.ReadLine() ?? throw new InvalidOperationException($"lm host printed nothing: {p.StandardError.ReadToEnd()}");
        var m = Regex.Match(line, @"listening on (\S+)");
        Assert.True(m.Success, line);
        var host = new LmHost(p, m.Groups[1].Value);
        p.ErrorDataReceived += (_, e) => { if (e.Data != null) { host.Add(e.Data); Out($"{host.Address}: {e.Data}"); } };
        p.BeginErrorReadLine();
        return host;
    }

    public (int Code, string Out, string Err) Run(params string[] args)
    {
        var p = Spawn(args);
        var err = p.StandardError.ReadToEndAsync();
        string o = p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(120000)) { p.Kill(); throw new TimeoutException($"lm {string.Join(' ', args)} did not finish"); }
        Out($"$ lm {string.Join(' ', args)} -> {p.ExitCode}\n{o}{err.Result}");
        return (p.ExitCode, o, err.Result);
    }

    /// <summary>An `lm` command against this fleet (adds --etcd).</summary>
    public (int Code, string Out, string Err) Fleetctl(params string[] args) => Run([.. args, "--etcd", etcd.Endpoints]);

    public static void Wait(Func<bool> condition, int timeoutMs, string what)
    {
        var until = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        while (!condition())
        {
            if (DateTime.UtcNow > until) throw new TimeoutException($"timed out waiting for {what}");
            Thread.Sleep(50);
        }
    }

    public void Dispose()
    {
        lock (_processes)
            foreach (var p in _processes)
            {
                try { if (!p.HasExited) { p.Kill(); p.WaitForExit(5000); } } catch (InvalidOperationException) { }
                p.Dispose();
            }
        try { Directory.Delete(CheckpointDir, recursive: true); } catch (IOException) { }
    }
}
