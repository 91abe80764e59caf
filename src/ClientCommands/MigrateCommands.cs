using System.CommandLine;
using Google.Protobuf;
using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
using LiveMigration.Migration.Reports;
using Spectre.Console;

namespace LiveMigration.Cli.Commands;

/// <summary>`lm migrate` and `lm cancel`, and the live progress display and report they share with `lm demo`.</summary>
public static class MigrateCommands
{
    public const int MigrationFailedExit = 1;

    /// <param name="timeline">draws `--timeline FILE`; null in the AOT client (./lm sends --timeline to the full CLI).</param>
    public static Command Migrate(TimelineWriter? timeline)
    {
        var name = new Argument<string>("name") { Description = "guest to migrate" };
        var from = new Option<string?>("--from") { Description = "source host (HOST:PORT); with --etcd, the guest's owner by default" };
        var to = new Option<string>("--to") { Description = "destination host (HOST:PORT), or auto (with --etcd: the host with the most free memory); with --resume, a new address of the same destination" };
        var etcd = EtcdOptions.Etcd();
        var prefix = EtcdOptions.Prefix();
        var resume = new Option<bool>("--resume") { Description = "recover a post-copy migration whose link failed: send the destination the pages it still lacks (QEMU's migrate-recover)" };
        var strategy = new Option<string>("--strategy") { Description = Strategies.Help, DefaultValueFactory = _ => "auto" };
        strategy.AcceptOnlyFromAmong([.. Strategies.Names]);
        var xbzrleCache = new Option<string>("--xbzrle-cache") { Description = "pre-copy: XBZRLE page cache size (64MiB, 0 = default 64 MiB)", DefaultValueFactory = _ => "0" };
        var autoConverge = new Option<bool>("--auto-converge") { Description = "pre-copy: throttle the guest when it dirties memory faster than the link sends it (always on for auto)" };
        var maxThrottle = new Option<uint?>("--max-throttle") { Description = "cap on how much auto-converge may hold the guest back, in percent (QEMU's max-cpu-throttle; default 95 for log shipping, 99 for pre-copy; 0 = never throttle)" };
        var bandwidth = new Option<string>("--bandwidth") { Description = "rate limit on the wire (1gbit, 100mbit, 125MB; 0 = unlimited)", DefaultValueFactory = _ => "0" };
        var adaptive = new Option<string?>("--adaptive-bandwidth") { Description = "rate-adaptive pre-copy (Clark et al. NSDI'05): MIN[,INCREMENT]; round 1 at MIN, each later round at the last round's dirty rate + INCREMENT (default 50mbit), up to --bandwidth" };
        var downtime = new Option<uint>("--downtime-limit") { Description = "downtime budget in ms (log shipping switches over when the predicted tail fits)", DefaultValueFactory = _ => 10 };
        var diskPath = new Option<string?>("--disk-path") { HelpName = "FILE", Description = "a guest with a disk: where the destination keeps the image, in its --disk-dir (a relative path is taken there; default: the image's file name there, or with --shared-disk the source's path)" };
        var diskBase = new Option<string?>("--disk-base") { HelpName = "FILE", Description = "an older copy of the guest's image on the destination, in its --disk-dir: only the blocks that differ cross (dsync-style); without it every non-zero block does" };
        var sharedDisk = new Option<bool>("--shared-disk") { Description = "both hosts see the same image file (at --disk-path): no block crosses, ownership of the file moves with GO" };
        var json = new Option<bool>("--json") { Description = "print the report as JSON" };
        var timelineFile = new Option<string?>("--timeline") { Description = "write the timeline plot to FILE (.png or .svg); the source host keeps every report either way" };
        var command = new Command("migrate", "Migrate a running guest to another host");
        command.Arguments.Add(name);
        command.Options.Add(from);
        command.Options.Add(to);
        command.Options.Add(resume);
        command.Options.Add(strategy);
        command.Options.Add(bandwidth);
        command.Options.Add(downtime);
        command.Options.Add(adaptive);
        command.Options.Add(xbzrleCache);
        command.Options.Add(autoConverge);
        command.Options.Add(maxThrottle);
        command.Options.Add(diskPath);
        command.Options.Add(diskBase);
        command.Options.Add(sharedDisk);
        command.Options.Add(json);
        command.Options.Add(timelineFile);
        var connect = HostCommands.Client(command);
        command.Options.Add(etcd);
        command.Options.Add(prefix);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            Names.Check(parse.GetValue(name));
            bool isResume = parse.GetValue(resume);
            if (!isResume && string.IsNullOrEmpty(parse.GetValue(to))) throw new FormatException("--to HOST:PORT is required (only --resume may leave it out)");
            var (source, target) = isResume ? (parse.GetValue(from) ?? throw new FormatException("--from HOST:PORT is required"), parse.GetValue(to) ?? "")
                : EtcdOptions.Route(parse.GetValue(etcd), parse.GetValue(prefix)!, parse.GetValue(name)!, parse.GetValue(from), parse.GetValue(to)!);
            var cmd = new MigrateCommand
            {
                Name = parse.GetValue(name)!, Target = target, Resume = isResume, Strategy = Strategies.Parse(parse.GetValue(strategy)!),
                BandwidthBytesPerSecond = Bandwidth.Parse(parse.GetValue(bandwidth)!), DowntimeLimitMs = parse.GetValue(downtime),
                XbzrleCacheBytes = parse.GetValue(xbzrleCache)!.Trim() == "0" ? 0 : LiveMigration.Guest.MachineConfig.ParseSize(parse.GetValue(xbzrleCache)!), AutoConverge = parse.GetValue(autoConverge),
                DiskPath = parse.GetValue(diskPath) ?? "", DiskBase = parse.GetValue(diskBase) ?? "", SharedDisk = parse.GetValue(sharedDisk),
            };
            if (cmd.SharedDisk && cmd.DiskBase.Length > 0) throw new FormatException("--shared-disk and --disk-base exclude each other (a shared file needs no base)");
            if (parse.GetValue(adaptive) is { } adaptiveText)
            {
                var parts = adaptiveText.Split(',');
                if (parts.Length > 2) throw new FormatException("--adaptive-bandwidth is MIN[,INCREMENT] (e.g. 100mbit,50mbit)");
                cmd.AdaptiveMinBytesPerSecond = Bandwidth.Parse(parts[0]);
                if (cmd.AdaptiveMinBytesPerSecond == 0) throw new FormatException("--adaptive-bandwidth needs a floor above 0");
                if (parts.Length == 2) cmd.AdaptiveIncrementBytesPerSecond = Bandwidth.Parse(parts[1]);
            }
            if (parse.GetValue(maxThrottle) is uint cap)
            {
                if (cap > 99) throw new FormatException("--max-throttle is a percentage from 0 to 99");
                cmd.MaxThrottlePercent = cap;
            }
            string? timelinePath = parse.GetValue(timelineFile);
            if (timelinePath != null)
                (timeline ?? throw new FormatException("--timeline needs the full CLI (src/Cli): this client carries no plotting"))
                    .CheckName(timelinePath); // a bad name fails before the migration, not after
            using var c = connect(parse, source);
            bool asJson = parse.GetValue(json);
            var report = RunWithProgress(c, cmd, showProgress: !asJson);
            if (timelinePath != null) timeline!.Write(report, timelinePath);
            if (asJson) Console.WriteLine(ToJson(report));
            else PrintReport(report, timelinePath);
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
        var connect = HostCommands.Client(command);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            using var c = connect(parse, parse.GetValue(host)!);
            Console.WriteLine(c.Cancel(parse.GetValue(name)!));
            return 0;
        }));
        return command;
    }

    public static string ToJson(MigrationReport report) => ReportStore.ToJson(report);

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
                Console.Error.WriteLine($"lm migrate: {p.ElapsedSeconds,6:F2} s  {Strategies.Name(p.Phase),-14} {Sent(p)} at {ByteSize.Human(p.RateBytesPerSecond)}/s  lag {p.ReplayLagSeconds * 1000:F1} ms  throttle {p.Throttle:P0}");
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

    private static string Sent(MigrationProgress p) => ByteSize.Human(p.BytesCheckpoint + p.BytesLog + p.BytesState + p.BytesProtocol + p.BytesPostcopy);

    private static Table ProgressTable(MigrationProgress? p, MigrateCommand cmd)
    {
        var t = new Table().Border(TableBorder.Rounded).Title(cmd.Resume ? $"resuming the post-copy of [bold]{Markup.Escape(cmd.Name)}[/]" : $"migrating [bold]{Markup.Escape(cmd.Name)}[/] to {Markup.Escape(cmd.Target)} ({Strategies.Name(cmd.Strategy)})");
        t.AddColumns("strategy", "phase", "elapsed", "checkpoint", "log", "state+proto", "rate", "pages", "replay lag", "throttle");
        if (p == null) { t.AddRow("", "setup", "", "", "", "", "", "", "", ""); return t; }
        string bar = p.PagesTotal > 0 ? $"{100.0 * p.PagesSent / p.PagesTotal:F0}%" : "";
        string strategy = p.Strategy == Strategy.Precopy ? $"precopy r{p.Round} ({p.DirtyPages} dirty)" : Strategies.Name(p.Strategy);
        t.AddRow(Markup.Escape(strategy), Strategies.Name(p.Phase), $"{p.ElapsedSeconds:F2} s", ByteSize.Human(p.BytesCheckpoint), ByteSize.Human(p.BytesLog),
            ByteSize.Human(p.BytesState + p.BytesProtocol), $"{ByteSize.Human(p.RateBytesPerSecond)}/s", bar,
            $"{p.ReplayLagSeconds * 1000:F1} ms", $"{p.Throttle:P0}");
        return t;
    }

    public static void PrintReport(MigrationReport r, string? timelinePath)
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
            Row("post-copy", $"{r.PostcopyPages} missing pages sent ({r.PostcopyRequestedPages} requested, {r.PostcopyPrepagedPages} pre-paged), {r.PostcopyVerifiedPages} verified in all, {ByteSize.Human(r.BytesPostcopy)}");
            AnsiConsole.Write(t);
            return;
        }
        Row("route", $"{r.Source} -> {r.Destination} ({Strategies.Name(r.Strategy)})");
        Row("setup", Ms(r.SetupSeconds));
        Row("checkpoint", Ms(r.CheckpointSeconds));
        Row("log", Ms(r.LogSeconds));
        Row("switchover", Ms(r.SwitchoverSeconds));
        Row("total", Ms(r.TotalSeconds));
        Row("downtime", r.DowntimeClock == "shared clock"
            ? $"{Ms(r.DowntimeSeconds)} (source pause to destination resume, one clock; {Ms(r.DowntimeSourceViewSeconds)} until the source heard of it)"
            : $"{Ms(r.DowntimeSeconds)} (source pause until the destination's Resumed arrived: an upper bound)");
        Row("bytes: checkpoint", $"{ByteSize.Human(r.BytesCheckpoint)} ({r.PagesSent} pages, {r.ZeroPages} zero pages as markers, {ByteSize.Human(r.RawBytesCheckpoint)} raw)");
        Row("bytes: log", ByteSize.Human(r.BytesLog));
        Row("bytes: state", ByteSize.Human(r.BytesState));
        Row("bytes: protocol", ByteSize.Human(r.BytesProtocol));
        if (r.BytesPostcopy > 0) Row("bytes: post-copy", ByteSize.Human(r.BytesPostcopy));
        if (r.DiskMode.Length > 0 && r.DiskMode != "none")
            Row("bytes: disk", $"{ByteSize.Human(r.BytesDisk)} ({r.DiskMode}: {r.DiskBlocksSent} blocks sent, {r.DiskZeroBlocks} zero blocks as markers, {r.DiskBlocksMatched} held by the destination's base)");
        Row("bytes: total", ByteSize.Human(r.BytesTotal));
        Row("throttle", $"max {r.MaxThrottle:P0}, mean {r.MeanThrottle:P0}");
        foreach (var s in r.Switches) Row($"strategy @ {Ms(s.T)}", $"{(s.HasFrom ? Strategies.Name(s.From) + " -> " : "")}{Strategies.Name(s.To)}: {s.Reason}");
        if (r.RoundRateBytesPerSecond.Count > 0)
            Row("round rates", string.Join(", ", r.RoundRateBytesPerSecond.Select(x => x > 0 ? $"{ByteSize.Human(x)}/s" : "unlimited")));
        if (r.PrecopyRounds > 0)
            Row("pre-copy", $"{r.PrecopyRounds} rounds, {r.XbzrlePages} XBZRLE pages ({ByteSize.Human(r.XbzrleBytes)} of deltas), {r.FullPages} whole, {r.UnchangedPages} unchanged, {r.FreePages} free skipped; ended by {r.ConvergedBy}");
        if (r.PostcopyPages > 0 || r.PostcopyVerifiedPages > 0)
            Row("post-copy", $"{r.PostcopyPages} pages after GO ({r.PostcopyRequestedPages} requested, {r.PostcopyPrepagedPages} pre-paged), {r.PostcopyVerifiedPages} hash-verified");
        if (r.Success) Row("verified", $"digest {r.Digest:x16} at icount {r.Icount:N0}{(r.DigestVerified ? "" : " (NOT verified)")}");
        if (!string.IsNullOrEmpty(r.Console)) Row("console", $"tcp:{r.Console}");
        if (timelinePath != null) Row("timeline", timelinePath);
        AnsiConsole.Write(t);
    }

    private static string Ms(double seconds) => seconds >= 1 ? $"{seconds:F2} s" : $"{seconds * 1000:F1} ms";
}

/// <summary>How `lm migrate --timeline FILE` draws its plot: ScottPlot, which only the full CLI carries.</summary>
/// <param name="CheckName">throws FormatException for a name it cannot write (before the migration starts).</param>
public sealed record TimelineWriter(Action<string> CheckName, Action<MigrationReport, string> Write);
