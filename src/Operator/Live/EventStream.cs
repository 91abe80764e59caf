using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace LiveMigration.Operator.Live;

/// <summary>
/// GET /api/events: Server-Sent Events. On connect the current status and every migration in
/// progress, then each event as the host produces it: status (1/s), progress (5/s per migration),
/// report (a migration ended). A comment line every 15 s keeps idle proxies from closing it.
/// </summary>
internal static class EventStream
{
    private static readonly TimeSpan KeepAlive = TimeSpan.FromSeconds(15);

    public static void Map(WebApplication app, LiveFeed feed, HostWatch watch, JsonSerializerOptions json, CancellationToken stopping)
    {
        app.MapGet("/api/events", async (HttpContext ctx) =>
        {
            ctx.Response.ContentType = "text/event-stream";
            ctx.Response.Headers.CacheControl = "no-cache";
            ctx.Response.Headers["X-Accel-Buffering"] = "no";
            using var cancel = CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted, stopping);
            var reader = feed.Subscribe(out var unsubscribe);
            try
            {
                var body = ctx.Response.Body;
                await Write(body, new LiveEvent("status", JsonSerializer.Serialize(watch.Current, json)), cancel.Token);
                foreach (var m in watch.Active) await Write(body, new LiveEvent("progress", JsonSerializer.Serialize(m, json)), cancel.Token);
                while (!cancel.IsCancellationRequested)
                {
                    using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancel.Token);
                    wait.CancelAfter(KeepAlive);
                    bool more;
                    try { more = await reader.WaitToReadAsync(wait.Token); }
                    catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
                    {
                        await body.WriteAsync(": keep-alive\n\n"u8.ToArray(), cancel.Token);
                        await body.FlushAsync(cancel.Token);
                        continue;
                    }
                    if (!more) break;
                    while (reader.TryRead(out var e)) await Write(body, e, cancel.Token);
                }
            }
            catch (OperationCanceledException) { } // the browser left or the host stops
            catch (IOException) { }
            finally { unsubscribe(); }
        });
    }

    private static async Task Write(Stream body, LiveEvent e, CancellationToken cancel)
    {
        // JSON from System.Text.Json has no raw newlines, so one data line carries it.
        await body.WriteAsync(Encoding.UTF8.GetBytes($"event: {e.Type}\ndata: {e.Json}\n\n"), cancel);
        await body.FlushAsync(cancel);
    }
}
