using System.CommandLine;
using System.Diagnostics;
using LiveMigration.Fleet;
using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Hosting;

namespace LiveMigration.Cli.Commands;

/// <summary>The options of `lm host` that make it a fleet member, and the hidden fault hook the process tests use.</summary>
internal sealed class HostFleetOptions
{
    private readonly Option<string?> _etcd = EtcdOptions.Etcd();
    private readonly Option<string> _prefix = EtcdOptions.Prefix();
    private readonly Option<double> _ttl = new("--lease-ttl") { Description = "seconds of the host's etcd lease; its guests stop at half of it without a keep-alive", DefaultValueFactory = _ => 6 };
    private readonly Option<string?> _checkpoints = new("--checkpoints") { Description = "shared directory for guest checkpoints (what `lm recover` restarts from)" };
    private readonly Option<double> _interval = new("--checkpoint-interval") { Description = "seconds between checkpoints of each running guest (0: only when a guest moves)", DefaultValueFactory = _ => 10 };
    private readonly Option<string?> _capacity = new("--capacity") { Description = "guest memory this host offers to placement (e.g. 8G; default: the machine's)" };
    private readonly Option<string[]> _fault = new("--fault-at") { Description = "test hook: POINT:crash (SIGKILL itself) or POINT:hold-MS at a migration fault point", Hidden = true, AllowMultipleArgumentsPerToken = true };

    public static HostFleetOptions Add(Command command)
    {
        var o = new HostFleetOptions();
        foreach (var opt in new Option[] { o._etcd, o._prefix, o._ttl, o._checkpoints, o._interval, o._capacity, o._fault }) command.Options.Add(opt);
        return o;
    }

    public HostOptions Apply(ParseResult parse, HostOptions options)
    {
        var faults = (parse.GetValue(_fault) ?? []).Select(ParseFault).ToList();
        if (faults.Count > 0)
            options = options with
            {
                Fault = p => { foreach (var (point, act) in faults) if (point.Equals(p)) act(); return false; },
                DestinationFault = p => { foreach (var (point, act) in faults) if (point.Equals(p)) act(); return false; },
            };
        if (parse.GetValue(_etcd) is not { } etcd) return options;
        if (parse.GetValue(_ttl) is var ttl && ttl < 1) throw new FormatException("--lease-ttl must be at least 1 second");
        return options with
        {
            Ownership = FleetMember.Join(new FleetOptions
            {
                Endpoints = etcd.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                Prefix = parse.GetValue(_prefix)!,
                LeaseTtl = TimeSpan.FromSeconds(ttl),
                CheckpointDir = parse.GetValue(_checkpoints),
                CheckpointInterval = TimeSpan.FromSeconds(parse.GetValue(_interval)),
                CapacityBytes = parse.GetValue(_capacity) is { } c ? Guest.MachineConfig.ParseSize(c) : 0,
            }),
            SwitchoverCommit = host => new OwnershipCommit(host), // the etcd transaction is the commit point
        };
    }

    /// <summary>POINT names a source <see cref="FaultPoint"/> or a destination <see cref="DestinationFaultPoint"/> (their names differ).</summary>
    private static (Enum, Action) ParseFault(string spec)
    {
        var parts = spec.Split(':');
        Enum? point = parts.Length != 2 ? null
            : Enum.TryParse<FaultPoint>(parts[0], out var s) ? s
            : Enum.TryParse<DestinationFaultPoint>(parts[0], out var d) ? d : null;
        if (point == null) throw new FormatException($"bad --fault-at '{spec}' (POINT:crash or POINT:hold-MS)");
        if (parts[1] == "crash")
            return (point, () => { Console.Error.WriteLine($"lm host: fault: crashing at {point}"); Process.GetCurrentProcess().Kill(); });
        if (parts[1].StartsWith("hold-") && int.TryParse(parts[1][5..], out int ms))
            return (point, () => { Console.Error.WriteLine($"lm host: fault: holding at {point} for {ms} ms"); Thread.Sleep(ms); });
        throw new FormatException($"bad --fault-at action '{parts[1]}' (crash or hold-MS)");
    }
}
