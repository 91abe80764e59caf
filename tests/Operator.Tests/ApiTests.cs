using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Operator.Access;
using LiveMigration.Tests.Shared;
using Microsoft.AspNetCore.Http;

namespace LiveMigration.Operator.Tests;

/// <summary>The JSON API, the event stream and /metrics over HTTP, without a browser.</summary>
public sealed class ApiTests
{
    private static async Task<string> ErrorText(HttpResponseMessage r)
    {
        using var doc = JsonDocument.Parse(await r.Content.ReadAsStringAsync());
        return doc.RootElement.GetProperty("text").GetString()!;
    }

    private static HttpClient Client(OperatorServer s) => new() { BaseAddress = new Uri(s.Url), Timeout = TimeSpan.FromSeconds(60) };

    [Fact]
    public async Task Status_lists_this_host_with_its_capacity_and_the_peer()
    {
        using var hosts = new TwoHosts();
        using var http = Client(hosts.DashboardA);
        using var doc = JsonDocument.Parse(await http.GetStringAsync("/api/status"));
        var host = doc.RootElement.GetProperty("host");
        Assert.Equal(hosts.A.Address, host.GetProperty("address").GetString());
        Assert.Equal(hosts.DashboardA.Url, host.GetProperty("http").GetString());
        Assert.Equal(Environment.ProcessorCount, host.GetProperty("cores").GetInt32());
        var peer = Assert.Single(doc.RootElement.GetProperty("peers").EnumerateArray());
        Assert.Equal(hosts.B.Address, peer.GetProperty("address").GetString());
        Assert.True(peer.GetProperty("reachable").GetBoolean());
    }

    [Fact]
    public async Task Bad_requests_get_one_line_errors_with_the_right_status()
    {
        using var hosts = new TwoHosts();
        using var http = Client(hosts.DashboardA);
        var missing = await http.PostAsJsonAsync("/api/migrate", new { name = "g" });
        Assert.Equal(HttpStatusCode.BadRequest, missing.StatusCode);
        Assert.Contains("give name and to", await ErrorText(missing));
        var strategy = await http.PostAsJsonAsync("/api/migrate", new { name = "g", to = hosts.B.Address, strategy = "teleport" });
        Assert.Equal(HttpStatusCode.BadRequest, strategy.StatusCode);
        Assert.Contains("unknown strategy 'teleport'", await ErrorText(strategy));
        var nobody = await http.PostAsJsonAsync("/api/migrate", new { name = "nobody", to = hosts.B.Address });
        Assert.Equal(HttpStatusCode.Conflict, nobody.StatusCode);
        Assert.Contains("no guest named 'nobody'", await ErrorText(nobody));
        var cancel = await http.PostAsJsonAsync("/api/cancel", new { name = "nobody" });
        Assert.Equal(HttpStatusCode.Conflict, cancel.StatusCode);
        Assert.Contains("no migration of 'nobody'", await ErrorText(cancel));
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync("/api/reports/0123456789abcdef")).StatusCode);
    }

    [Fact]
    public void The_dashboard_binds_loopback_only_and_controls_come_from_loopback_only()
    {
        using var host = new GuestHost(new HostOptions());
        var e = Assert.Throws<FormatException>(() => new OperatorServer(host, new OperatorOptions { Http = "0.0.0.0:0" }));
        Assert.Contains("loopback", e.Message);

        var authorizer = new LoopbackOnly();
        var remote = new DefaultHttpContext();
        remote.Connection.RemoteIpAddress = IPAddress.Parse("192.0.2.7");
        Assert.Contains("from this machine only", authorizer.Deny(remote, ControlAction.Migrate));
        var local = new DefaultHttpContext();
        local.Connection.RemoteIpAddress = IPAddress.IPv6Loopback;
        Assert.Null(authorizer.Deny(local, ControlAction.Cancel));
    }

    [Fact]
    public async Task A_host_with_tls_serves_a_dashboard_that_shows_and_does_not_control()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"lm-dash-tls-{Environment.ProcessId}");
        if (Directory.Exists(dir)) Directory.Delete(dir, true);
        Migration.Transport.Tls.CertificateAuthority.Init(dir, "op");
        Migration.Transport.Tls.CertificateAuthority.Issue(dir, Migration.Transport.Tls.Role.Host, "h", [IPAddress.Loopback]);
        using var host = new GuestHost(new HostOptions { Tls = Migration.Transport.Tls.TlsIdentity.Load(Path.Combine(dir, "h")) });
        using var dashboard = new OperatorServer(host, new OperatorOptions());
        using var http = Client(dashboard);
        var migrate = await http.PostAsJsonAsync("/api/migrate", new { name = "g", to = "127.0.0.1:1" });
        Assert.Equal(HttpStatusCode.Forbidden, migrate.StatusCode);
        Assert.Contains("needs an operator certificate", await ErrorText(migrate));
        var cancel = await http.PostAsJsonAsync("/api/cancel", new { name = "g" });
        Assert.Equal(HttpStatusCode.Forbidden, cancel.StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/api/status")).StatusCode);
    }

    [Fact]
    public async Task A_migration_shows_in_the_event_stream_the_reports_and_the_metrics()
    {
        using var hosts = new TwoHosts();
        using var http = Client(hosts.DashboardA);
        using var events = await http.GetStreamAsync("/api/events");
        var lines = new StreamReader(events);
        Assert.Equal("event: status", await lines.ReadLineAsync());

        using (var c = HostClient.Connect(hosts.A.Address))
            c.Start("g", File.ReadAllBytes(RepoPaths.Guest("idle_forever")), 32UL << 20, "idle_forever");
        var migrate = await http.PostAsJsonAsync("/api/migrate", new { name = "g", to = hosts.B.Address, strategy = "stopcopy" });
        Assert.Equal(HttpStatusCode.Accepted, migrate.StatusCode);
        using var accepted = JsonDocument.Parse(await migrate.Content.ReadAsStringAsync());
        string id = accepted.RootElement.GetProperty("migrationId").GetString()!;
        Assert.Matches("^[0-9a-f]{16}$", id);

        // The stream carries the report event (status and progress events come before it).
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        string? data = null;
        while (await lines.ReadLineAsync(timeout.Token) is { } line)
            if (line == "event: report") { data = await lines.ReadLineAsync(timeout.Token); break; }
        Assert.NotNull(data);
        Assert.Contains($"\"id\":\"{id}\"", data);
        Assert.Contains("\"success\":true", data);

        using var list = JsonDocument.Parse(await http.GetStringAsync("/api/reports"));
        Assert.Equal(id, Assert.Single(list.RootElement.EnumerateArray()).GetProperty("id").GetString());
        using var report = JsonDocument.Parse(await http.GetStringAsync($"/api/reports/{id}"));
        Assert.True(report.RootElement.GetProperty("digestVerified").GetBoolean());
        Assert.Equal("bytes", report.RootElement.GetProperty("units").GetProperty("bytes").GetString());
        var png = await http.GetAsync($"/api/reports/{id}/timeline.png");
        Assert.Equal("image/png", png.Content.Headers.ContentType!.MediaType);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, (await png.Content.ReadAsByteArrayAsync())[..4]);
        Assert.Contains("<svg", await http.GetStringAsync($"/api/reports/{id}/timeline.svg"));

        string metrics = await http.GetStringAsync("/metrics");
        Assert.Contains("lm_migrations_total{strategy=\"stopcopy\",outcome=\"success\"} 1", metrics);
        Assert.Contains("lm_migration_downtime_seconds_count{strategy=\"stopcopy\"} 1", metrics);
        Assert.Matches(@"lm_migration_bytes_total\{category=""checkpoint""\} [1-9]", metrics);
        using var httpB = Client(hosts.DashboardB);
        string metricsB = "";
        for (int i = 0; i < 50 && !metricsB.Contains("lm_guest_mips{guest=\"g\"}"); i++)
        {
            await Task.Delay(200);
            metricsB = await httpB.GetStringAsync("/metrics");
        }
        Assert.Contains("lm_guest_mips{guest=\"g\"}", metricsB);
    }
}
