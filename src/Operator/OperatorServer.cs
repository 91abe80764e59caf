using System.Net;
using System.Reflection;
using System.Text.Json;
using LiveMigration.Migration.Hosting;
using LiveMigration.Operator.Api;
using LiveMigration.Operator.Live;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace LiveMigration.Operator;

/// <summary>
/// `lm host --http ADDR`: the dashboard (static page, embedded), the JSON API, the live event
/// stream and /metrics for one host, served by Kestrel inside the host's process.
/// </summary>
public sealed class OperatorServer : IDisposable
{
    private readonly WebApplication _app;
    private readonly HostWatch _watch;
    private readonly LiveFeed _feed = new();

    public OperatorServer(GuestHost host, OperatorOptions options)
    {
        var (name, port) = Migration.Transport.Address.Parse(options.Http);
        var ip = Migration.Transport.Address.Resolve(name);
        if (!IPAddress.IsLoopback(ip))
            throw new FormatException($"--http {options.Http}: the dashboard binds a loopback address only (e.g. 127.0.0.1:{port}) until TLS client certificates and roles protect it");

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ApplicationName = "lm", ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(ip, port));
        // The host process owns Ctrl-C and SIGTERM; the web server must not hold the process open.
        builder.Services.AddSingleton<IHostLifetime, EmbeddedLifetime>();
        builder.Services.Configure<Microsoft.Extensions.Hosting.HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(2));
        builder.Services.ConfigureHttpJsonOptions(o => o.SerializerOptions.PropertyNamingPolicy = JsonNamingPolicy.CamelCase);
        _app = builder.Build();

        Metrics = new HostMetrics();
        var json = new JsonSerializerOptions(JsonSerializerDefaults.Web);
        _watch = new HostWatch(host, options.Peers, _feed, Metrics, json);
        // A host with TLS obeys certificates only: the page's loopback default would be a way around them.
        var authorizer = host.Options.Tls != null && options.Authorizer is Access.LoopbackOnly ? new Access.ViewOnly() : options.Authorizer;
        ApiEndpoints.Map(_app, host, _watch, authorizer, json);
        EventStream.Map(_app, _feed, _watch, json, _app.Lifetime.ApplicationStopping);
        _app.MapGet("/metrics", async (HttpContext ctx) =>
        {
            ctx.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await Metrics.WriteAsync(ctx.Response.Body, ctx.RequestAborted);
        });
        MapStatic(_app);
        _app.StartAsync().GetAwaiter().GetResult();
        Url = _app.Urls.First();
        _watch.Http = Url;
    }

    /// <summary>http://HOST:PORT of the dashboard.</summary>
    public string Url { get; }

    public HostMetrics Metrics { get; }

    private static void MapStatic(WebApplication app)
    {
        var assembly = typeof(OperatorServer).Assembly;
        foreach (var (path, resource, type) in new[]
        {
            ("/", "wwwroot/index.html", "text/html; charset=utf-8"),
            ("/app.js", "wwwroot/app.js", "text/javascript; charset=utf-8"),
            ("/charts.js", "wwwroot/charts.js", "text/javascript; charset=utf-8"),
            ("/app.css", "wwwroot/app.css", "text/css; charset=utf-8"),
        })
        {
            byte[] body = Read(assembly, resource);
            app.MapGet(path, () => Results.Bytes(body, type));
        }
    }

    private static byte[] Read(Assembly assembly, string resource)
    {
        using var s = assembly.GetManifestResourceStream(resource) ?? throw new InvalidOperationException($"embedded resource {resource} is missing");
        using var m = new MemoryStream();
        s.CopyTo(m);
        return m.ToArray();
    }

    public void Dispose()
    {
        _feed.Close();
        _watch.Dispose();
        _app.StopAsync().GetAwaiter().GetResult();
        ((IDisposable)_app).Dispose();
    }

    private sealed class EmbeddedLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
