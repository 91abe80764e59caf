using LiveMigration.Fleet.Etcd;
using LiveMigration.Fleet.Etcd.Api;
using LiveMigration.Migration.Hosting;

namespace LiveMigration.Fleet;

/// <summary>
/// What the `lm` commands read and change in the fleet: hosts, guests, placement, draining,
/// recovery. Hosts act on the records themselves (FleetMember); this side only reads them and
/// takes the few operator transactions.
/// </summary>
public sealed class FleetAdmin : IDisposable
{
    private readonly EtcdClient _etcd;

    public FleetAdmin(string endpoints, string prefix = FleetKeys.DefaultPrefix)
    {
        _etcd = EtcdClient.Parse(endpoints);
        Keys = new FleetKeys(prefix);
    }

    public FleetKeys Keys { get; }

    private static T Try<T>(Func<T> f)
    {
        try { return f(); }
        catch (EtcdUnavailableException e) { throw new HostException(e.Message); }
    }

    /// <summary>The live hosts (their lease holds), by address.</summary>
    public List<HostRecord> Hosts() =>
        Try(() => _etcd.GetPrefix(Keys.Hosts).Kvs.Select(kv => FleetJson.Read<HostRecord>(kv.Value.ToStringUtf8())).OrderBy(h => h.Address, StringComparer.Ordinal).ToList());

    public HashSet<string> Draining() =>
        Try(() => _etcd.GetPrefix(Keys.DrainingAll).Kvs.Select(kv => kv.Key.ToStringUtf8()[Keys.DrainingAll.Length..]).ToHashSet());

    public List<GuestRecord> Guests() => Try(() => GuestRecord.All(Keys, _etcd.GetPrefix(Keys.Guests).Kvs));

    public GuestRecord Guest(string name) =>
        Try(() => GuestRecord.From(Keys, name, _etcd.GetPrefix(Keys.Guest(name)).Kvs)) ?? throw new HostException($"no guest named '{name}' in the fleet");

    /// <summary>
    /// The live, non-draining host other than <paramref name="exclude"/> with the most free memory
    /// that fits <paramref name="memory"/>; <paramref name="reserved"/> counts placements not yet
    /// visible in the host records (a parallel drain).
    /// </summary>
    public string Place(ulong memory, string? exclude, IReadOnlyDictionary<string, ulong>? reserved = null)
    {
        var draining = Draining();
        var best = Hosts()
            .Where(h => h.Address != exclude && !draining.Contains(h.Address))
            .Select(h => (h.Address, Free: h.FreeBytes - Math.Min(h.FreeBytes, reserved?.GetValueOrDefault(h.Address) ?? 0)))
            .Where(h => h.Free >= memory)
            .OrderByDescending(h => h.Free).ThenBy(h => h.Address, StringComparer.Ordinal)
            .FirstOrDefault();
        return best.Address ?? throw new HostException($"no live host that is not draining has {memory >> 20} MiB free");
    }

    public void SetDraining(string host, bool draining) =>
        Try(() => draining ? (object)_etcd.Put(Keys.Draining(host), "1") : _etcd.Delete(Keys.Draining(host)));

    /// <summary>
    /// `lm recover NAME --to HOST`: one transaction moves the epoch to HOST, only while the owner's
    /// lease is gone (so the owner can never resume it) and HOST is alive. HOST then starts the guest
    /// from its last checkpoint. Returns the new epoch.
    /// </summary>
    public long Recover(string name, string to)
    {
        var rec = Guest(name);
        if (rec.Owner == to) throw new HostException($"'{name}' already belongs to {to}");
        CheckPair(rec, to);
        var info = rec.Info with { Recover = true };
        var r = Try(() => _etcd.Txn(new TxnRequest
        {
            Compare =
            {
                Txn.ValueIs(Keys.Owner(name), rec.Owner), Txn.ValueIs(Keys.Epoch(name), rec.Epoch.ToString(System.Globalization.CultureInfo.InvariantCulture)),
                Txn.Missing(Keys.Host(rec.Owner)), Txn.Exists(Keys.Host(to)), Txn.Missing(Keys.Draining(to)),
            },
            Success = { Txn.Put(Keys.Owner(name), to), Txn.Put(Keys.Epoch(name), (rec.Epoch + 1).ToString(System.Globalization.CultureInfo.InvariantCulture)), Txn.Put(Keys.Info(name), FleetJson.Write(info)) },
        }));
        if (r.Succeeded) return rec.Epoch + 1;
        var hosts = Hosts().Select(h => h.Address).ToHashSet();
        if (hosts.Contains(rec.Owner)) throw new HostException($"{rec.Owner} still holds its lease: '{name}' runs there; migrate it instead");
        if (!hosts.Contains(to)) throw new HostException($"{to} is not a live host of the fleet");
        if (Draining().Contains(to)) throw new HostException($"{to} is draining");
        throw new HostException($"the record of '{name}' changed meanwhile; try again");
    }

    /// <summary>
    /// Before the epoch moves: the newest checkpoint of a guest with a drive must have its disk
    /// snapshot beside it, giving the digest the checkpoint expects, and <paramref name="to"/> must
    /// keep disk images. A refusal is one line and changes nothing.
    /// </summary>
    private void CheckPair(GuestRecord rec, string to)
    {
        if (rec.Info.CheckpointDir.Length == 0 || FleetMember.LatestCheckpoint(rec.Info.CheckpointDir, rec.Name) is not { } checkpoint) return; // the host says why
        try
        {
            if (!FleetDiskSnapshot.NeedsDisk(File.ReadAllBytes(checkpoint))) return;
            FleetDiskSnapshot.Verify(checkpoint, rec.Name);
        }
        catch (Exception e) when (e is InvalidDataException or IOException or Trace.TraceFormatException) { throw new HostException($"cannot recover '{rec.Name}': {e.Message}"); }
        if (Hosts().FirstOrDefault(h => h.Address == to) is { TakesDisks: false })
            throw new HostException($"cannot recover '{rec.Name}' on {to}: it has a drive, and {to} keeps no disk images (start it with --disk-dir DIR)");
    }

    public void Dispose() => _etcd.Dispose();
}
