using System.Diagnostics;
using Grpc.Core;
using LiveMigration.Fleet.Etcd;
using LiveMigration.Fleet.Etcd.Api;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Fleet;

public sealed record FleetOptions
{
    /// <summary>etcd member URLs (`--etcd URL[,URL...]`).</summary>
    public required IReadOnlyList<string> Endpoints { get; init; }
    public string Prefix { get; init; } = FleetKeys.DefaultPrefix;
    /// <summary>The host's lease; its guests stop at half of it without a successful keep-alive.</summary>
    public TimeSpan LeaseTtl { get; init; } = TimeSpan.FromSeconds(6);
    /// <summary>Shared directory for guest checkpoints (what `lm recover` restarts from); null: none.</summary>
    public string? CheckpointDir { get; init; }
    /// <summary>How often running guests are checkpointed into <see cref="CheckpointDir"/> (zero: only at a move).</summary>
    public TimeSpan CheckpointInterval { get; init; } = TimeSpan.FromSeconds(10);
    /// <summary>How long the commit transaction may take before the migration aborts (the guest is paused meanwhile).</summary>
    public TimeSpan CommitBudget { get; init; } = TimeSpan.FromSeconds(2);
    /// <summary>How long one rollback's transaction may wait for etcd; past it `lm migrate` returns and the host keeps asking, the guest paused.</summary>
    public TimeSpan ReclaimBudget { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>Guest memory this host offers (placement); default: the machine's available memory.</summary>
    public ulong CapacityBytes { get; init; }
}

/// <summary>
/// A host's membership in the fleet: its lease and host record, the keep-alive that extends the
/// guests' run permit, fencing when keep-alives stop, and the reconcile loop (host record,
/// checkpoints, `lm recover` requests). The ownership transactions are in FleetMember.Ownership.cs.
/// </summary>
public sealed partial class FleetMember : IOwnership
{
    private readonly GuestHost _host;
    private readonly EtcdClient _etcd;
    private readonly FleetOptions _options;
    private readonly FleetKeys _keys;
    private readonly CancellationTokenSource _stop = new();
    private readonly Dictionary<string, long> _epochs = []; // guests owned here, for the host record
    private readonly Thread _keepAlive, _reconcile;
    private long _lease;
    private bool _fenced;

    public FleetMember(GuestHost host, FleetOptions options)
    {
        _host = host;
        _options = options;
        _keys = new FleetKeys(options.Prefix);
        _etcd = new EtcdClient(options.Endpoints);
        Address = host.Address;
        Capacity = options.CapacityBytes != 0 ? options.CapacityBytes : (ulong)GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        try
        {
            Register();
            Warm();
        }
        catch (Exception e) when (e is EtcdUnavailableException or RpcException) { throw new HostException($"cannot join the fleet: {e.Message}"); }
        _keepAlive = new Thread(KeepAliveLoop) { IsBackground = true, Name = "fleet-keepalive", Priority = ThreadPriority.AboveNormal };
        _reconcile = new Thread(ReconcileLoop) { IsBackground = true, Name = "fleet-reconcile" };
        _keepAlive.Start();
        _reconcile.Start();
    }

    /// <summary>`lm host --etcd`: the factory <see cref="HostOptions.Ownership"/> takes.</summary>
    public static Func<GuestHost, IOwnership> Join(FleetOptions options) => host => new FleetMember(host, options);

    public bool Coordinated => true;
    public RunPermit Permit { get; } = new() { Until = 0 }; // nothing runs before the first lease
    public string Address { get; }
    public ulong Capacity { get; }
    public FleetKeys Keys => _keys;
    private long TtlTicks => (long)(_options.LeaseTtl.TotalSeconds * Stopwatch.Frequency);

    private void Log(string message) => _host.Log($"fleet: {message}");

    /// <summary>A fresh lease and the host record under it; the permit then runs half a TTL from the grant.</summary>
    private void Register()
    {
        long asked;
        for (int attempt = 1; ; attempt++)
        {
            asked = Stopwatch.GetTimestamp();
            _lease = _etcd.GrantLease(_options.LeaseTtl);
            try
            {
                PublishHostRecord();
                break;
            }
            // A short TTL on a loaded machine can run out between the grant and the first put: grant again.
            catch (RpcException e) when (e.StatusCode == StatusCode.NotFound && attempt < 5)
            {
                Log($"lease {_lease:x} expired before the host record was written; granting another");
            }
        }
        Extend(asked);
        Log($"registered under lease {_lease:x} (TTL {_options.LeaseTtl.TotalSeconds:F0} s)");
    }

    /// <summary>Runs each call shape of a switchover once now, so the first commit pays no JIT in its downtime.</summary>
    private void Warm()
    {
        string probe = $"{Address}.warm-up";
        _etcd.Put(_keys.Owner(probe), Address);
        _etcd.Put(_keys.Epoch(probe), "0");
        var watching = WatchRecord(probe, Address, "", 0, CancellationToken.None);
        Thread.Sleep(200);
        var t = Move(probe, Address, 0, Txn.Put(_keys.Epoch(probe), "1"));
        t.Compare.Add(Txn.Exists(_keys.Host(Address)));
        _etcd.Txn(t); // the watch sees the epoch move and settles
        watching.Wait(TimeSpan.FromSeconds(10));
        _etcd.Delete(_keys.Guest(probe), prefix: true);
    }

    private void Extend(long askedAt) => Permit.Until = Math.Max(Permit.Until, askedAt + TtlTicks / 2);

    private void KeepAliveLoop()
    {
        var interval = TimeSpan.FromTicks(_options.LeaseTtl.Ticks / 6);
        while (!_stop.IsCancellationRequested)
        {
            var invoker = _etcd.Invoker(out int index);
            try
            {
                using var call = new Lease.LeaseClient(invoker).LeaseKeepAlive(cancellationToken: _stop.Token);
                while (!_stop.IsCancellationRequested)
                {
                    long sent = Stopwatch.GetTimestamp();
                    if (!call.RequestStream.WriteAsync(new LeaseKeepAliveRequest { ID = _lease }).Wait(interval)) throw new TimeoutException("keep-alive not sent");
                    var next = call.ResponseStream.MoveNext(_stop.Token);
                    if (!next.Wait(interval) || !next.Result) throw new TimeoutException("no keep-alive answer");
                    OnKeepAlive(sent, call.ResponseStream.Current.TTL > 0);
                    _stop.Token.WaitHandle.WaitOne(interval);
                }
            }
            catch (Exception e) when (e is RpcException or TimeoutException or AggregateException or IOException or InvalidOperationException or EtcdUnavailableException)
            {
                if (_stop.IsCancellationRequested) return;
                _etcd.Rotate(index);
                NoteFence($"keep-alive failed ({Inner(e).Message})");
                _stop.Token.WaitHandle.WaitOne(50);
            }
        }
    }

    private static Exception Inner(Exception e) => e is AggregateException { InnerException: { } i } ? i : e;

    private void NoteFence(string why)
    {
        if (!Permit.Expired || _fenced) return;
        _fenced = true;
        Log($"fenced: {why}; the guests stand still until this host has re-read that it owns them");
    }

    /// <summary>
    /// A keep-alive answered. While the permit holds it is extended; once it has expired (or the
    /// lease is gone) the guests resume only after <see cref="Reverify"/>.
    /// </summary>
    private void OnKeepAlive(long sent, bool leaseAlive)
    {
        if (!leaseAlive)
        {
            Permit.Until = 0;
            NoteFence("the lease expired");
            _fenced = true;
            Register(); // a new lease; the permit is still expired until the records are re-read
            Permit.Until = 0;
            Reverify(Stopwatch.GetTimestamp());
            return;
        }
        if (!Permit.Expired) { Extend(sent); return; }
        NoteFence("the permit expired before a keep-alive answered");
        Reverify(sent);
    }

    /// <summary>Drops the guests whose record names another host now; the rest run again.</summary>
    private void Reverify(long provenAt)
    {
        var records = GuestRecord.All(_keys, _etcd.GetPrefix(_keys.Guests).Kvs).ToDictionary(r => r.Name);
        foreach (var e in _host.Entries())
        {
            if (e.Instance == null || e.Outgoing != null) continue; // a migration settles its own guest
            if (records.TryGetValue(e.Name, out var r) && r.Owner == Address) continue;
            string owner = r?.Owner ?? "nobody";
            e.Instance.Dispose();
            lock (_host.Lock)
            {
                e.Instance = null;
                e.MovedTo = r?.Owner;
                if (r == null) _host.RemoveEntry(e);
            }
            lock (_epochs) _epochs.Remove(e.Name);
            Log($"'{e.Name}' belongs to {owner} now (epoch {r?.Epoch}); dropped here, it never ran again on this host");
        }
        Extend(provenAt);
        if (Permit.Expired) return; // the proof came too late to extend past now: the next keep-alive tries again
        _fenced = false;
        Log("unfenced: the lease is alive and the records re-read");
    }

    private void PublishHostRecord()
    {
        var guests = new List<HostGuest>();
        ulong used = 0;
        foreach (var e in _host.Entries())
        {
            if (e.Instance is { } g)
            {
                long epoch;
                lock (_epochs) epoch = _epochs.GetValueOrDefault(e.Name);
                guests.Add(new HostGuest(e.Name, GuestStatuses.Name(e.Outgoing != null ? GuestStatus.MigratingOut : g.State), g.Machine.Config.MemorySize, epoch));
                used += g.Machine.Config.MemorySize;
            }
            else if (e.Arriving != null) used += e.Arriving.MemorySize;
        }
        var record = new HostRecord { Address = Address, CapacityBytes = Capacity, FreeBytes = Capacity > used ? Capacity - used : 0, Guests = guests, UpdatedUtc = DateTime.UtcNow, TakesDisks = Migration.Engine.DiskPaths.Root(_host.Options) != null };
        _etcd.Put(_keys.Host(Address), FleetJson.Write(record), _lease);
    }

    private void ReconcileLoop()
    {
        var lastCheckpoint = Stopwatch.StartNew();
        while (!_stop.Token.WaitHandle.WaitOne(500))
        {
            if (Permit.Expired) continue; // fenced: nothing to publish or start
            try
            {
                PublishHostRecord();
                StartRecoveries();
                if (_options.CheckpointDir != null && _options.CheckpointInterval > TimeSpan.Zero && lastCheckpoint.Elapsed >= _options.CheckpointInterval)
                {
                    CheckpointAll();
                    lastCheckpoint.Restart();
                }
            }
            catch (Exception e) when (e is EtcdUnavailableException or RpcException or IOException or HostException)
            {
                Log($"reconcile: {e.Message}");
            }
        }
    }

    public void Dispose()
    {
        if (_stop.IsCancellationRequested) return;
        _stop.Cancel();
        _keepAlive.Join(2000);
        _reconcile.Join(2000);
        try
        {
            _etcd.RevokeLease(_lease); // deregisters: the host record goes with the lease
            Log("deregistered");
        }
        catch (EtcdUnavailableException e) { Log($"could not deregister ({e.Message}); the lease expires by itself"); }
        _etcd.Dispose();
    }
}
