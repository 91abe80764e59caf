using LiveMigration.Migration.Engine;
using System.Text.Json;
using LiveMigration.Guest;
using LiveMigration.Guest.Loader;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Reports;
using LiveMigration.Operator.Access;
using LiveMigration.Operator.Live;
using LiveMigration.Operator.Plots;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace LiveMigration.Operator.Api;

/// <summary>The host's HTTP/JSON API (API.md documents it): status, start, migrate, cancel, reports.</summary>
internal static class ApiEndpoints
{
    private static readonly TimeSpan MigrationStartWait = TimeSpan.FromSeconds(5);

    public static void Map(WebApplication app, GuestHost host, HostWatch watch, IControlAuthorizer authorizer, JsonSerializerOptions json)
    {
        app.MapGet("/api/status", () => Results.Json(watch.Current, json));

        app.MapPost("/api/guests", async (HttpContext ctx) =>
        {
            if (authorizer.Deny(ctx, ControlAction.StartGuest) is { } denied) return Forbidden(denied, json);
            if (!ctx.Request.HasFormContentType) return Bad("send multipart/form-data with name, mem and the elf file", json);
            var form = await ctx.Request.ReadFormAsync(ctx.RequestAborted);
            var file = form.Files.GetFile("elf");
            string name = form["name"].ToString().Trim();
            if (file == null || file.Length == 0) return Bad("no ELF file in the form field 'elf'", json);
            if (name == "") return Bad("a guest needs a name", json);
            using var data = new MemoryStream();
            await file.CopyToAsync(data, ctx.RequestAborted);
            try
            {
                string mem = form["mem"].ToString();
                ulong size = mem == "" ? 0 : MachineConfig.ParseSize(mem);
                string console = host.StartGuest(new StartGuest
                {
                    Name = name, Elf = Google.Protobuf.ByteString.CopyFrom(data.ToArray()), MemorySize = size,
                    ImageName = Path.GetFileNameWithoutExtension(file.FileName),
                });
                return Results.Json(new Message($"started '{name}'; console tcp:{console}"), json, statusCode: StatusCodes.Status201Created);
            }
            catch (Exception e) when (e is HostException or ElfLoadException or FormatException) { return Conflict(e.Message, json); }
        });

        app.MapPost("/api/migrate", async (HttpContext ctx) =>
        {
            if (authorizer.Deny(ctx, ControlAction.Migrate) is { } denied) return Forbidden(denied, json);
            var req = await Body<MigrateRequest>(ctx, json);
            if (req == null || string.IsNullOrWhiteSpace(req.Name) || string.IsNullOrWhiteSpace(req.To))
                return Bad("give name and to (the destination's HOST:PORT)", json);
            MigrateCommand cmd;
            try { cmd = Command(req); }
            catch (FormatException e) { return Bad(e.Message, json); }
            return await StartMigration(host, cmd, json);
        });

        app.MapPost("/api/cancel", async (HttpContext ctx) =>
        {
            if (authorizer.Deny(ctx, ControlAction.Cancel) is { } denied) return Forbidden(denied, json);
            var req = await Body<CancelRequest>(ctx, json);
            if (req == null || string.IsNullOrWhiteSpace(req.Name)) return Bad("give the name of the guest whose migration to cancel", json);
            try { return Results.Json(new Message(host.Cancel(req.Name)), json); }
            catch (HostException e) { return Conflict(e.Message, json); }
        });

        app.MapGet("/api/reports", () => Results.Json(host.Reports.All().Select(HostWatch.Summary).Reverse().ToList(), json));

        app.MapGet("/api/reports/{id}", (string id) => host.Reports.Find(id) is { } r
            ? Results.Text(ReportStore.ToJson(r), "application/json; charset=utf-8")
            : NotFound(id, json));

        app.MapGet("/api/reports/{id}/timeline.{ext}", (string id, string ext) =>
        {
            if (host.Reports.Find(id) is not { } r) return NotFound(id, json);
            return ext switch
            {
                "png" => Results.Bytes(TimelinePlot.Png(r), "image/png"),
                "svg" => Results.Text(TimelinePlot.Svg(r), "image/svg+xml; charset=utf-8"),
                _ => Bad("a timeline is timeline.png or timeline.svg", json),
            };
        });
    }

    private static MigrateCommand Command(MigrateRequest req)
    {
        Strategy strategy = Strategies.Parse(string.IsNullOrWhiteSpace(req.Strategy) ? "auto" : req.Strategy.Trim());
        if (req.MaxThrottlePercent is > 99) throw new FormatException("maxThrottlePercent is a percentage from 0 to 99");
        var cmd = new MigrateCommand
        {
            Name = req.Name!.Trim(), Target = req.To!.Trim(), Strategy = strategy,
            BandwidthBytesPerSecond = LiveMigration.Migration.Transport.Bandwidth.Parse(req.Bandwidth ?? "0"), DowntimeLimitMs = req.DowntimeLimitMs ?? 10,
        };
        if (req.MaxThrottlePercent is uint cap) cmd.MaxThrottlePercent = cap;
        return cmd;
    }

    /// <summary>Runs the migration on its own thread; answers once it has an id (its first progress) or has failed to start.</summary>
    private static async Task<IResult> StartMigration(GuestHost host, MigrateCommand cmd, JsonSerializerOptions json)
    {
        var started = new TaskCompletionSource<IResult>(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnProgress(string id, MigrateCommand c, MigrationProgress p)
        {
            if (c == cmd) started.TrySetResult(Results.Json(new Accepted(id, cmd.Name, cmd.Target), json, statusCode: StatusCodes.Status202Accepted));
        }
        host.MigrationProgressed += OnProgress;
        new Thread(() =>
        {
            try
            {
                var report = host.Migrate(cmd);
                started.TrySetResult(Results.Json(new Accepted(report.MigrationId, cmd.Name, cmd.Target), json, statusCode: StatusCodes.Status202Accepted));
            }
            catch (Exception e) when (e is HostException or FormatException) { started.TrySetResult(Conflict(e.Message, json)); }
            catch (Exception e) when (e is IOException or ObjectDisposedException or OperationCanceledException or InvalidOperationException)
            {
                // The host went down mid-migration (its own log says so): a failed start, not a crashed process.
                started.TrySetResult(Conflict($"the migration stopped: {e.Message}", json));
            }
            finally { host.MigrationProgressed -= OnProgress; }
        }) { IsBackground = true, Name = $"migrate-{cmd.Name}" }.Start();
        var first = await Task.WhenAny(started.Task, Task.Delay(MigrationStartWait));
        return first == started.Task ? started.Task.Result : Results.Json(new Accepted("", cmd.Name, cmd.Target), json, statusCode: StatusCodes.Status202Accepted);
    }

    private static async Task<T?> Body<T>(HttpContext ctx, JsonSerializerOptions json) where T : class
    {
        try { return await JsonSerializer.DeserializeAsync<T>(ctx.Request.Body, json, ctx.RequestAborted); }
        catch (JsonException) { return null; }
    }

    private static IResult Bad(string message, JsonSerializerOptions json) => Results.Json(new Error(message), json, statusCode: StatusCodes.Status400BadRequest);
    private static IResult Forbidden(string message, JsonSerializerOptions json) => Results.Json(new Error(message), json, statusCode: StatusCodes.Status403Forbidden);
    private static IResult Conflict(string message, JsonSerializerOptions json) => Results.Json(new Error(message), json, statusCode: StatusCodes.Status409Conflict);
    private static IResult NotFound(string id, JsonSerializerOptions json) => Results.Json(new Error($"no report with id '{id}' on this host"), json, statusCode: StatusCodes.Status404NotFound);
}
