using System.CommandLine;
using Google.Protobuf;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Reports;
using Spectre.Console;

namespace LiveMigration.Cli.Commands;

/// <summary>`lm migrate` and `lm cancel`, and the live progress display and report they share with `lm demo`.</summary>
public static class MigrateCommands
{
    public const int MigrationFailedExit = 1;

    public static Command Migrate()
    {
        var name = new Argument<string>("name") { Description = "guest to migrate" };
        var from = new Option<string?>("--from") { Description = "source host (HOST:PORT); with --etcd, the guest's owner by default" };
        var to = new Option<string>("--to") { Description = "destination host (HOST:PORT), or auto (with --etcd: the host with the most free memory); with --resume, a new address of the same destination" };
        var etcd = FleetCommands.EtcdOption();
        var prefix = FleetCommands.PrefixOption();
        var resume = new Option<bool>("--resume") { Description = "recover a post-copy migration whose link failed: send the destination the pages it still lacks (QEMU's migrate-recover)" };
        var strategy = new Option<string>("--strategy") { Description = "auto (log shipping, falling back to pre-copy, then post-copy), log (log shipping), precopy (XBZRLE pre-copy), stopcopy or postcopy (resume at once, pages on demand)", DefaultValueFactory = _ => "auto" };
        strategy.AcceptOnlyFromAmong("auto", "log", "precopy", "stopcopy", "postcopy");
        var xbzrleCache = new Option<string>("--xbzrle-cache") { Description = "pre-copy: XBZRLE page cache size (64MiB, 0 = default 64 MiB)", DefaultValueFactory = _ => "0" };
        var autoConverge = new Option<bool>("--auto-converge") { Description = "pre-copy: throttle the guest when it dirties memory faster than the link sends it (always on for auto)" };
        var maxThrottle = new Option<uint?>("--max-throttle") { Description = "cap on how much auto-converge may hold the guest back, in percent (QEMU's max-cpu-throttle; default 95 for log shipping, 99 for pre-copy; 0 = never throttle)" };
        var bandwidth = new Option<string>("--bandwidth") { Description = "rate limit on the wire (1gbit, 100mbit, 125MB; 0 = unlimited)", DefaultValueFactory = _ => "0" };
        var downtime = new Option<uint>("--downtime-limit") { Description = "downtime budget in ms (log shipping switches over when the predicted tail fits)", DefaultValueFactory = _ => 10 };
        var json = new Option<bool>("--json") { Description = "print the report as JSON" };
        var svg = new Option<string?>("--svg") { Description = "where to write the timeline SVG (default: migration-NAME-ID.svg in the current directory)" };
        var command = new Command("migrate", "Migrate a running guest to another host");
        command.Arguments.Add(name);
        command.Options.Add(from);
        command.Options.Add(to);
        command.Options.Add(resume);
        command.Options.Add(strategy);
        command.Options.Add(bandwidth);
        command.Options.Add(downtime);
        command.Options.Add(xbzrleCache);
        command.Options.Add(autoConverge);
        command.Options.Add(maxThrottle);
        command.Options.Add(json);
        command.Options.Add(svg);
        command.Options.Add(etcd);
        command.Options.Add(prefix);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            bool isResume = parse.GetValue(resume);
            if (!isResume && string.IsNullOrEmpty(parse.GetValue(to))) throw new FormatException("--to HOST:PORT is required (only --resume may leave it out)");
            var (source, target) = isResume ? (parse.GetValue(from) ?? throw new FormatException("--from HOST:PORT is required"), parse.GetValue(to) ?? "")
                : FleetCommands.Route(parse.GetValue(etcd), parse.GetValue(prefix)!, parse.GetValue(name)!, parse.GetValue(from), parse.GetValue(to)!);
            var cmd = new MigrateCommand
            {
                Name = parse.GetValue(name)!, Target = target, Resume = isResume, Strategy = parse.GetValue(strategy)!,
                BandwidthBytesPerSecond = Rate.Parse(parse.GetValue(bandwidth)!), DowntimeLimitMs = parse.GetValue(downtime),
                XbzrleCacheBytes = parse.GetValue(xbzrleCache)!.Trim() == "0" ? 0 : LiveMigration.Guest.MachineConfig.ParseSize(parse.GetValue(xbzrleCache)!), AutoConverge = parse.GetValue(autoConverge),
            };
            if (parse.GetValue(maxThrottle) is uint cap)
            {
                if (cap > 99) throw new FormatException("--max-throttle is a percentage from 0 to 99");
                cmd.MaxThrottlePercent = cap;
            }
            using var c = HostClient.Connect(source);
            bool asJson = parse.GetValue(json);
            var report = RunWithProgress(c, cmd, showProgress: !asJson);
            string svgPath = parse.GetValue(svg) ?? $"migration-{cmd.Name}-{report.MigrationId}.svg";
            File.WriteAllText(svgPath, TimelineSvg.Render(report));
            if (asJson) Console.WriteLine(ToJson(report));
            else PrintReport(report, svgPath);
            return report.Success ? 0 : MigrationFailedExit;
        }));
        return command;
    }

    public static Command Cancel()
    {
        var name = new Argument<string>("name") { Description = "guest whose migration to cancel" };
        var host = new Option<string>("--host") { Description = "source host (HOST:PORT)", Required = true };
        var command = new Command("cancel", "Cancel a migration before GO; the guest keeps running on the source");
        command.Arguments.Add(name);
        command.Options.Add(host);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            using var c = HostClient.Connect(parse.GetValue(host)!);
            Console.WriteLine(c.Cancel(parse.GetValue(name)!));
            return 0;
        }));
        return command;
    }

    public static string ToJson(MigrationReport report) =>
        new JsonFormatter(JsonFormatter.Settings.Default.WithFormatDefaultValues(true)).Format(report);

    /// <summary>Runs the migration, showing a live progress table when the terminal is interactive.</summary>
    public static MigrationReport RunWithProgress(HostClient client, MigrateCommand cmd, bool showProgress)
    {
        if (!showProgress || !AnsiConsole.Profile.Capabilities.Interactive)
        {
            if (!showProgress) return client.Migrate(cmd);
            double lastPrint = -1;
            return client.Migrate(cmd, p =>
            {
                if (p.ElapsedSeconds - lastPrint < 0.5) return;
                lastPrint = p.ElapsedSeconds;
                Console.Error.WriteLine($"lm migrate: {p.ElapsedSeconds,6:F2} s  {p.Phase,-14} {Sent(p)} at {TimelineSvg.Human(p.RateBytesPerSecond)}/s  lag {p.ReplayLagSeconds * 1000:F1} ms  throttle {p.Throttle:P0}");
            });
        }
        MigrationReport? report = null;
        var table = ProgressTable(null, cmd);
        AnsiConsole.Live(table).AutoClear(false).Start(ctx =>
        {
            report = client.Migrate(cmd, p =>
            {
                ctx.UpdateTarget(ProgressTable(p, cmd));
                ctx.Refresh();
            });
        });
        return report!;
    }

    private static string Sent(MigrationProgress p) => TimelineSvg.Human(p.BytesCheckpoint + p.BytesLog + p.BytesState + p.BytesProtocol + p.BytesPostcopy);

    private static Table ProgressTable(MigrationProgress? p, MigrateCommand cmd)
    {
        var t = new Table().Border(TableBorder.Rounded).Title(cmd.Resume ? $"resuming the post-copy of [bold]{Markup.Escape(cmd.Name)}[/]" : $"migrating [bold]{Markup.Escape(cmd.Name)}[/] to {Markup.Escape(cmd.Target)} ({cmd.Strategy})");
        t.AddColumns("strategy", "phase", "elapsed", "checkpoint", "log", "state+proto", "rate", "pages", "replay lag", "throttle");
        if (p == null) { t.AddRow("", "setup", "", "", "", "", "", "", "", ""); return t; }
        string bar = p.PagesTotal > 0 ? $"{100.0 * p.PagesSent / p.PagesTotal:F0}%" : "";
        string strategy = p.Strategy == "precopy" ? $"precopy r{p.Round} ({p.DirtyPages} dirty)" : p.Strategy;
        t.AddRow(Markup.Escape(strategy), p.Phase, $"{p.ElapsedSeconds:F2} s", TimelineSvg.Human(p.BytesCheckpoint), TimelineSvg.Human(p.BytesLog),
            TimelineSvg.Human(p.BytesState + p.BytesProtocol), $"{TimelineSvg.Human(p.RateBytesPerSecond)}/s", bar,
            $"{p.ReplayLagSeconds * 1000:F1} ms", $"{p.Throttle:P0}");
        return t;
    }

    public static void PrintReport(MigrationReport r, string? svgPath)
    {
        var t = new Table().Border(TableBorder.Rounded).HideHeaders().AddColumns("what", "value");
        string what = r.ResumedPostcopy ? "post-copy resume" : "migration";
        t.Title(r.Success ? $"[green]{(r.ResumedPostcopy ? "resumed post-copy of" : "migrated")} {Markup.Escape(r.Name)}[/]" : $"[red]{what} of {Markup.Escape(r.Name)} failed[/]");
        void Row(string k, string v) => t.AddRow(Markup.Escape(k), Markup.Escape(v));
        if (!string.IsNullOrEmpty(r.Error)) Row(r.Success ? "note" : "error", r.Error);
        if (r.ResumedPostcopy)
        {
            Row("route", $"{r.Source} -> {r.Destination} (migration {r.MigrationId})");
            Row("total", Ms(r.TotalSeconds));
            Row("post-copy", $"{r.PostcopyPages} missing pages sent ({r.PostcopyRequestedPages} requested, {r.PostcopyPrepagedPages} pre-paged), {r.PostcopyVerifiedPages} verified in all, {TimelineSvg.Human(r.BytesPostcopy)}");
            AnsiConsole.Write(t);
            return;
        }
        Row("route", $"{r.Source} -> {r.Destination} ({r.Strategy})");
        Row("setup", Ms(r.SetupSeconds));
        Row("checkpoint", Ms(r.CheckpointSeconds));
        Row("log", Ms(r.LogSeconds));
        Row("switchover", Ms(r.SwitchoverSeconds));
        Row("total", Ms(r.TotalSeconds));
        Row("downtime", r.DowntimeClock == "shared clock"
            ? $"{Ms(r.DowntimeSeconds)} (source pause to destination resume, one clock; {Ms(r.DowntimeSourceViewSeconds)} until the source heard of it)"
            : $"{Ms(r.DowntimeSeconds)} (source pause until the destination's Resumed arrived: an upper bound)");
        Row("bytes: checkpoint", $"{TimelineSvg.Human(r.BytesCheckpoint)} ({r.PagesSent} pages, {r.ZeroPages} zero pages as markers, {TimelineSvg.Human(r.RawBytesCheckpoint)} raw)");
        Row("bytes: log", TimelineSvg.Human(r.BytesLog));
        Row("bytes: state", TimelineSvg.Human(r.BytesState));
        Row("bytes: protocol", TimelineSvg.Human(r.BytesProtocol));
        if (r.BytesPostcopy > 0) Row("bytes: post-copy", TimelineSvg.Human(r.BytesPostcopy));
        Row("bytes: total", TimelineSvg.Human(r.BytesCheckpoint + r.BytesLog + r.BytesState + r.BytesProtocol + r.BytesPostcopy));
        Row("throttle", $"max {r.MaxThrottle:P0}, mean {r.MeanThrottle:P0}");
        foreach (var s in r.Switches) Row($"strategy @ {Ms(s.T)}", $"{(s.From == "" ? "" : s.From + " -> ")}{s.To}: {s.Reason}");
        if (r.PrecopyRounds > 0)
            Row("pre-copy", $"{r.PrecopyRounds} rounds, {r.XbzrlePages} XBZRLE pages ({TimelineSvg.Human(r.XbzrleBytes)} of deltas), {r.FullPages} whole, {r.UnchangedPages} unchanged, {r.FreePages} free skipped; ended by {r.ConvergedBy}");
        if (r.PostcopyPages > 0 || r.PostcopyVerifiedPages > 0)
            Row("post-copy", $"{r.PostcopyPages} pages after GO ({r.PostcopyRequestedPages} requested, {r.PostcopyPrepagedPages} pre-paged), {r.PostcopyVerifiedPages} hash-verified");
        if (r.Success) Row("verified", $"digest {r.Digest:x16} at icount {r.Icount:N0}{(r.DigestVerified ? "" : " (NOT verified)")}");
        if (!string.IsNullOrEmpty(r.Console)) Row("console", $"tcp:{r.Console}");
        if (svgPath != null) Row("timeline", svgPath);
        AnsiConsole.Write(t);
    }

    private static string Ms(double seconds) => seconds >= 1 ? $"{seconds:F2} s" : $"{seconds * 1000:F1} ms";
}
