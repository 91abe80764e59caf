using System.Diagnostics;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests.Security;

/// <summary>Many idle peers cost a host sockets, not threads; the idle and handshake timeouts close them.</summary>
public sealed class ConnectionScaleTests(ITestOutputHelper output)
{
    [Fact]
    public void Idle_connections_hold_no_thread_each_and_close_after_the_idle_timeout()
    {
        using var t = new TargetHost(output, o => o with { MaxConnections = 400, IdleTimeout = TimeSpan.FromSeconds(4), HandshakeTimeout = TimeSpan.FromSeconds(4) });
        t.Status(); // the pool and the accept path are warm
        int before = ProcessFigures.Threads;
        var peers = new List<RawPeer>();
        var silent = new List<RawPeer>();
        try
        {
            var opened = Stopwatch.StartNew();
            for (int i = 0; i < 200; i++)
            {
                var p = new RawPeer(t.Address, receiveTimeoutMs: 20000);
                peers.Add(p);
                Assert.True(p.Hello(Purpose.Control).Accepted);
            }
            for (int i = 0; i < 50; i++) silent.Add(new RawPeer(t.Address, receiveTimeoutMs: 20000)); // never say Hello
            Thread.Sleep(500);
            int during = ProcessFigures.Threads;
            output.WriteLine($"threads: {before} before, {during} with 200 idle connections after Hello and 50 silent ones (opened in {opened.ElapsedMilliseconds} ms)");
            Assert.True(during - before < 40, $"threads grew from {before} to {during} for 250 idle connections");
            Assert.Empty(t.Status().Guests); // it still answers
            // Every idle one is closed by the host after the idle timeout, the silent ones after the handshake timeout.
            foreach (var p in peers.Concat(silent)) Assert.True(p.WaitClosed(), "an idle connection stayed open past its timeout");
            Assert.True(opened.Elapsed.TotalSeconds >= 3.5, $"closed after {opened.Elapsed.TotalSeconds:F1} s, before the 4 s timeout");
            t.WaitForLog("closed an idle connection");
            t.WaitForLog("at the handshake");
            Assert.True(t.LogLines.Length < 40, $"a flood of idle peers floods the log: {t.LogLines.Length} lines");
            Assert.Empty(t.Status().Guests);
        }
        finally
        {
            foreach (var p in peers.Concat(silent)) p.Dispose();
        }
    }

    [Fact]
    public void Idle_tls_connections_hold_no_thread_each()
    {
        using var t = new TargetHost(output, o => o with { Tls = Fleet.Host("hostA"), MaxConnections = 200, IdleTimeout = TimeSpan.FromSeconds(30), HandshakeTimeout = TimeSpan.FromSeconds(10) });
        using var op = Fleet.Operator;
        using (var c = HostClient.Connect(t.Address, op)) c.Status();
        int before = ProcessFigures.Threads;
        var conns = new List<Connection>();
        try
        {
            for (int i = 0; i < 60; i++)
            {
                var c = Connection.Connect(t.Address, tls: op);
                conns.Add(c);
                c.ClientHandshake(Purpose.Control);
            }
            Thread.Sleep(500);
            int during = ProcessFigures.Threads;
            output.WriteLine($"threads: {before} before, {during} with 60 idle TLS connections after Hello");
            Assert.True(during - before < 30, $"threads grew from {before} to {during} for 60 idle TLS connections");
            using var s = HostClient.Connect(t.Address, op);
            Assert.Empty(s.Status().Guests);
        }
        finally
        {
            foreach (var c in conns) c.Dispose();
        }
    }
}
