using System.CommandLine;
using LiveMigration.Fleet;
using LiveMigration.Migration.Hosting;

namespace LiveMigration.Cli.Commands;

/// <summary>`--etcd` and `--etcd-prefix`, and how the client commands find a guest's host with them.</summary>
public static class EtcdOptions
{
    public static Option<string?> Etcd(bool required = false) => new("--etcd")
    {
        Description = "etcd endpoints of the fleet (URL[,URL...], e.g. http://127.0.0.1:2379)",
        Required = required,
        DefaultValueFactory = _ => Environment.GetEnvironmentVariable("LM_ETCD"),
    };

    public static Option<string> Prefix() => new("--etcd-prefix")
    {
        Description = "key prefix of the fleet in etcd",
        DefaultValueFactory = _ => FleetKeys.DefaultPrefix,
        Hidden = true,
    };

    /// <summary>
    /// `lm migrate NAME [--from HOST] --to HOST|auto --etcd URL`: the source is the guest's owner,
    /// auto places it on the live, non-draining host with the most free memory.
    /// </summary>
    public static (string From, string To) Route(string? etcd, string prefix, string name, string? from, string to)
    {
        if (etcd == null)
        {
            if (to == "auto") throw new FormatException("--to auto places the guest in a fleet: give --etcd URL");
            return (from ?? throw new FormatException("--from HOST:PORT is required (or --etcd URL to find the guest's host)"), to);
        }
        using var fleet = new FleetAdmin(etcd, prefix);
        var rec = fleet.Guest(name);
        if (from != null && from != rec.Owner) throw new HostException($"'{name}' runs on {rec.Owner}, not on {from}");
        return (rec.Owner, to == "auto" ? fleet.Place(rec.Info.MemoryBytes, rec.Owner) : to);
    }

    /// <summary>`lm status NAME --etcd URL`: the host that owns NAME, wherever it is.</summary>
    public static string Locate(string etcd, string prefix, string name)
    {
        using var fleet = new FleetAdmin(etcd, prefix);
        return fleet.Guest(name).Owner;
    }
}
