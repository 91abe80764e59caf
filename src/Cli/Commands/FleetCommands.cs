using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Transport;
using System.CommandLine;
using LiveMigration.Fleet;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Reports;
using Spectre.Console;

namespace LiveMigration.Cli.Commands;

/// <summary>`lm hosts`, `lm guests`, `lm recover`, `lm drain` (the `--etcd` options are <see cref="EtcdOptions"/>).</summary>
public static class FleetCommands
{
    private static FleetAdmin Admin(ParseResult parse, Option<string?> etcd, Option<string> prefix) =>
        new(parse.GetValue(etcd) ?? throw new FormatException("--etcd URL is required (or set LM_ETCD)"), parse.GetValue(prefix)!);

    private static Command WithFleet(Command c, out Option<string?> etcd, out Option<string> prefix)
    {
        etcd = EtcdOptions.Etcd();
        prefix = EtcdOptions.Prefix();
        c.Options.Add(etcd);
        c.Options.Add(prefix);
        return c;
    }

    public static Command Hosts()
    {
        var command = WithFleet(new Command("hosts", "List the live hosts of the fleet"), out var etcd, out var prefix);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            using var fleet = Admin(parse, etcd, prefix);
            var draining = fleet.Draining();
            var hosts = fleet.Hosts();
            if (hosts.Count == 0) { Console.WriteLine("no live hosts"); return 0; }
            var t = new Table().AddColumns("host", "state", "guests", "capacity", "free");
            foreach (var h in hosts)
                t.AddRow(h.Address, draining.Contains(h.Address) ? "draining" : "alive", string.Join(' ', h.Guests.Select(g => g.Name)), Mib(h.CapacityBytes), Mib(h.FreeBytes));
            AnsiConsole.Write(t);
            return 0;
        }));
        return command;
    }

    public static Command Guests()
    {
        var command = WithFleet(new Command("guests", "List every guest of the fleet: its owner, epoch and state there"), out var etcd, out var prefix);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            using var fleet = Admin(parse, etcd, prefix);
            var hosts = fleet.Hosts().ToDictionary(h => h.Address);
            var guests = fleet.Guests();
            if (guests.Count == 0) { Console.WriteLine("no guests"); return 0; }
            var t = new Table().AddColumns("guest", "owner", "epoch", "state", "memory", "image");
            foreach (var g in guests)
            {
                string state = !hosts.TryGetValue(g.Owner, out var h) ? "owner gone (lm recover)"
                    : g.Info.Recover ? "recovering" : h.Guests.FirstOrDefault(x => x.Name == g.Name)?.State ?? "not running";
                t.AddRow(Markup.Escape(g.Name), g.Owner, g.Epoch.ToString(), Markup.Escape(state), Mib(g.Info.MemoryBytes), Markup.Escape(g.Info.Image));
            }
            AnsiConsole.Write(t);
            return 0;
        }));
        return command;
    }

    public static Command Recover()
    {
        var name = new Argument<string>("name") { Description = "guest whose host is gone" };
        var to = new Option<string>("--to") { Description = "host that restarts it from its last checkpoint (HOST:PORT)", Required = true };
        var command = WithFleet(new Command("recover", "Restart a guest whose host lost its lease on another host, from its last checkpoint (moves the epoch)"), out var etcd, out var prefix);
        command.Arguments.Add(name);
        command.Options.Add(to);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            using var fleet = Admin(parse, etcd, prefix);
            string n = parse.GetValue(name)!, host = parse.GetValue(to)!;
            long epoch = fleet.Recover(n, host);
            var until = DateTime.UtcNow.AddSeconds(30);
            while (true)
            {
                var rec = fleet.Guest(n);
                if (rec.Owner != host || rec.Epoch != epoch) throw new HostException($"the record of '{n}' moved on meanwhile (owner {rec.Owner}, epoch {rec.Epoch})");
                if (!rec.Info.Recover && fleet.Hosts().FirstOrDefault(h => h.Address == host)?.Guests.Any(g => g.Name == n) == true)
                {
                    Console.WriteLine($"recovered '{n}' on {host} at epoch {epoch} from {rec.Info.Checkpoint}");
                    return 0;
                }
                if (DateTime.UtcNow > until) throw new TimeoutException($"{host} took '{n}' (epoch {epoch}) but has not started it within 30 s; see its log");
                Thread.Sleep(100);
            }
        }));
        return command;
    }

    public static Command Drain()
    {
        var host = new Argument<string>("host") { Description = "host to evacuate (HOST:PORT)" };
        var parallel = new Option<int>("--parallel") { Description = "migrations at a time", DefaultValueFactory = _ => 1 };
        var strategy = new Option<string>("--strategy") { Description = "strategy of each migration", DefaultValueFactory = _ => "auto" };
        var bandwidth = new Option<string>("--bandwidth") { Description = "rate limit of each migration (0 = unlimited)", DefaultValueFactory = _ => "0" };
        var json = new Option<bool>("--json") { Description = "print the summary as JSON lines" };
        var command = WithFleet(new Command("drain", "Migrate every guest off a host (it is marked draining: no new guests)"), out var etcd, out var prefix);
        command.Arguments.Add(host);
        command.Options.Add(parallel);
        command.Options.Add(strategy);
        command.Options.Add(bandwidth);
        command.Options.Add(json);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            using var fleet = Admin(parse, etcd, prefix);
            string h = parse.GetValue(host)!;
            var last = new Dictionary<string, double>();
            var template = new MigrateCommand { Strategy = Strategies.Parse(parse.GetValue(strategy)!), BandwidthBytesPerSecond = Bandwidth.Parse(parse.GetValue(bandwidth)!), DowntimeLimitMs = 10 };
            var (results, elapsed) = FleetDrain.Run(fleet, h, parse.GetValue(parallel), template, (g, p) =>
            {
                lock (last)
                {
                    if (p.ElapsedSeconds - last.GetValueOrDefault(g, -1) < 0.5) return;
                    last[g] = p.ElapsedSeconds;
                }
                Console.Error.WriteLine($"lm drain: {g,-12} {p.ElapsedSeconds,6:F2} s  {Strategies.Name(p.Phase),-14} {Strategies.Name(p.Strategy)}");
            });
            if (parse.GetValue(json))
            {
                foreach (var r in results) Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(new { guest = r.Guest, to = r.Destination, success = r.Success, error = r.Error, downtimeMs = r.Report?.DowntimeSeconds * 1000, totalMs = r.Report?.TotalSeconds * 1000, digest = r.Report?.Digest.ToString("x16"), digestVerified = r.Report?.DigestVerified == true }));
                Console.WriteLine(System.Text.Json.JsonSerializer.Serialize(new { drained = h, guests = results.Count, failed = results.Count(r => !r.Success), seconds = elapsed.TotalSeconds }));
            }
            else
            {
                var t = new Table().Title($"drained {Markup.Escape(h)}: {results.Count(r => r.Success)}/{results.Count} moved in {elapsed.TotalSeconds:F2} s")
                    .AddColumns("guest", "to", "strategy", "downtime", "total", "digest", "result");
                foreach (var r in results)
                    t.AddRow(Markup.Escape(r.Guest), r.Destination, r.Report is { } s ? Strategies.Name(s.Strategy) : "", r.Report is { } a ? $"{a.DowntimeSeconds * 1000:F1} ms" : "",
                        r.Report is { } b ? $"{b.TotalSeconds:F2} s" : "", r.Report is { DigestVerified: true } c ? $"{c.Digest:x16} verified" : "",
                        r.Success ? "[green]moved[/]" : $"[red]{Markup.Escape(r.Error ?? "failed")}[/]");
                AnsiConsole.Write(t);
            }
            return results.All(r => r.Success) ? 0 : MigrateCommands.MigrationFailedExit;
        }));
        return command;
    }

    private static string Mib(ulong bytes) => $"{bytes >> 20} MiB";
}
