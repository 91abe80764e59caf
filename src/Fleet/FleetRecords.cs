using System.Text.Json;
using System.Text.Json.Serialization;
using LiveMigration.Fleet.Etcd.Api;

namespace LiveMigration.Fleet;

/// <summary>
/// The fleet's key layout under one prefix (default "/lm/"):
/// <code>
/// hosts/ADDR          HostRecord (JSON), bound to the host's lease: gone when the host is
/// draining/ADDR       present while `lm drain` evacuates ADDR (no lease: survives the drain's client)
/// guests/NAME/owner   ADDR of the one host that may run NAME
/// guests/NAME/epoch   decimal; +1 on every change of owner (and on a source's rollback)
/// guests/NAME/info    GuestInfoRecord (JSON): memory, image, last checkpoint, recovery request
/// </code>
/// owner and epoch are separate keys so a transaction compares exactly "owner = A and epoch = n".
/// </summary>
public sealed class FleetKeys(string prefix = FleetKeys.DefaultPrefix)
{
    public const string DefaultPrefix = "/lm/";

    public string Prefix { get; } = prefix.EndsWith('/') ? prefix : prefix + "/";
    public string Hosts => Prefix + "hosts/";
    public string Host(string address) => Hosts + address;
    public string Draining(string address) => Prefix + "draining/" + address;
    public string DrainingAll => Prefix + "draining/";
    public string Guests => Prefix + "guests/";
    public string Guest(string name) => Guests + name + "/";
    public string Owner(string name) => Guest(name) + "owner";
    public string Epoch(string name) => Guest(name) + "epoch";
    public string Info(string name) => Guest(name) + "info";
}

/// <summary>What a host publishes about itself under its lease.</summary>
public sealed record HostRecord
{
    public string Address { get; init; } = "";
    public ulong CapacityBytes { get; init; }
    public ulong FreeBytes { get; init; }
    public List<HostGuest> Guests { get; init; } = [];
    public DateTime UpdatedUtc { get; init; }
    /// <summary>The host keeps disk images (`lm host --disk-dir`/`--data`): only such a host can recover a guest with a drive.</summary>
    public bool TakesDisks { get; init; }
}

public sealed record HostGuest(string Name, string State, ulong MemoryBytes, long Epoch);

public sealed record GuestInfoRecord
{
    public ulong MemoryBytes { get; init; }
    public string Image { get; init; } = "";
    /// <summary>Path of the last checkpoint (shared storage), or "" when none was written.</summary>
    public string Checkpoint { get; init; } = "";
    /// <summary>The owner's checkpoint directory (shared storage), where `lm recover` checks the checkpoint and disk snapshot first; "" when none.</summary>
    public string CheckpointDir { get; init; } = "";
    /// <summary>Set by `lm recover`: the owner starts the guest from <see cref="Checkpoint"/>.</summary>
    public bool Recover { get; init; }
}

/// <summary>One guest's ownership record as read back from etcd.</summary>
public sealed record GuestRecord(string Name, string Owner, long Epoch, GuestInfoRecord Info)
{
    /// <summary>Reads the record of <paramref name="name"/> from the keys of its prefix; null when it has no owner key.</summary>
    public static GuestRecord? From(FleetKeys keys, string name, IEnumerable<KeyValue> kvs)
    {
        string? owner = null;
        long epoch = 0;
        var info = new GuestInfoRecord();
        foreach (var kv in kvs)
        {
            string k = kv.Key.ToStringUtf8();
            if (k == keys.Owner(name)) owner = kv.Value.ToStringUtf8();
            else if (k == keys.Epoch(name)) epoch = long.Parse(kv.Value.ToStringUtf8(), System.Globalization.CultureInfo.InvariantCulture);
            else if (k == keys.Info(name)) info = FleetJson.Read<GuestInfoRecord>(kv.Value.ToStringUtf8());
        }
        return owner == null ? null : new GuestRecord(name, owner, epoch, info);
    }

    /// <summary>Every guest record under the prefix (one range read of guests/).</summary>
    public static List<GuestRecord> All(FleetKeys keys, IEnumerable<KeyValue> kvs)
    {
        var byName = new Dictionary<string, List<KeyValue>>();
        foreach (var kv in kvs)
        {
            string rest = kv.Key.ToStringUtf8()[keys.Guests.Length..];
            int slash = rest.LastIndexOf('/');
            if (slash <= 0) continue;
            string name = rest[..slash];
            if (!byName.TryGetValue(name, out var list)) byName[name] = list = [];
            list.Add(kv);
        }
        return [.. byName.Select(p => From(keys, p.Key, p.Value)).OfType<GuestRecord>().OrderBy(g => g.Name, StringComparer.Ordinal)];
    }
}

internal static class FleetJson
{
    // Source-generated (FleetJsonContext): the NativeAOT client reads these records too, without reflection.
    public static string Write<T>(T value) => JsonSerializer.Serialize(value, Info<T>());

    public static T Read<T>(string json) => JsonSerializer.Deserialize(json, Info<T>()) ?? throw new InvalidDataException($"bad fleet record: {json}");

    private static System.Text.Json.Serialization.Metadata.JsonTypeInfo<T> Info<T>() =>
        (System.Text.Json.Serialization.Metadata.JsonTypeInfo<T>)(FleetJsonContext.Default.GetTypeInfo(typeof(T)) ?? throw new InvalidOperationException($"{typeof(T).Name} is not a fleet record"));
}

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase, DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(HostRecord))]
[JsonSerializable(typeof(GuestInfoRecord))]
internal sealed partial class FleetJsonContext : JsonSerializerContext;
