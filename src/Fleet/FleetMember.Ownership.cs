using System.Diagnostics;
using System.Globalization;
using Grpc.Core;
using LiveMigration.Fleet.Etcd;
using LiveMigration.Fleet.Etcd.Api;
using LiveMigration.Guest;
using LiveMigration.Migration.Hosting;
using LiveMigration.Trace;

namespace LiveMigration.Fleet;

/// <summary>The ownership transactions: every decision is one etcd transaction on the guest's record, or a read of it.</summary>
public sealed partial class FleetMember
{
    private static string Num(long n) => n.ToString(CultureInfo.InvariantCulture);

    /// <summary>The last commit's duration (the time the etcd transaction added to the switchover).</summary>
    public TimeSpan LastCommitTime { get; private set; }

    /// <summary>Stopwatch timestamps (bench figures): when the last commit returned, when a destination last saw its record commit.</summary>
    public long LastCommittedAt { get; private set; }
    public long LastRecordSeenAt { get; private set; }

    public string? RefuseNewGuests()
    {
        try { return _etcd.Get(_keys.Draining(Address)).Count > 0 ? $"{Address} is draining: it takes no new guests" : null; }
        catch (EtcdUnavailableException e) { return $"etcd is unreachable, so this host takes no guests ({e.Message})"; }
    }

    public long Claim(string guest, ulong memoryBytes, string image)
    {
        var info = FleetJson.Write(new GuestInfoRecord { MemoryBytes = memoryBytes, Image = image, CheckpointDir = _options.CheckpointDir is { } d ? Path.GetFullPath(d) : "" });
        var r = Try(() => _etcd.Txn(new TxnRequest
        {
            Compare = { Txn.Missing(_keys.Owner(guest)) },
            Success = { Txn.Put(_keys.Owner(guest), Address), Txn.Put(_keys.Epoch(guest), "1"), Txn.Put(_keys.Info(guest), info) },
            Failure = { Txn.GetPrefix(_keys.Guest(guest)) },
        }));
        long epoch = 1;
        if (!r.Succeeded)
        {
            var rec = Record(guest, r);
            if (rec == null || rec.Owner != Address)
                throw new HostException($"'{guest}' belongs to {rec?.Owner} in the fleet (epoch {rec?.Epoch}); migrate it there, or `lm recover` it when that host is gone");
            epoch = rec.Epoch;
        }
        lock (_epochs) _epochs[guest] = epoch;
        return epoch;
    }

    public long? EpochIfOwner(string guest, string owner)
    {
        GuestRecord? rec;
        try { rec = Read(guest); }
        catch (EtcdUnavailableException e) { throw new OwnershipUnsettledException(e.Message); }
        return rec?.Owner == owner ? rec.Epoch : null;
    }

    public GuestRecord? Read(string guest) => GuestRecord.From(_keys, guest, _etcd.GetPrefix(_keys.Guest(guest)).Kvs);

    private GuestRecord? Record(string guest, TxnResponse failed) =>
        GuestRecord.From(_keys, guest, failed.Responses.SelectMany(o => o.ResponseRange?.Kvs ?? []));

    /// <summary>etcd unreachable where the caller can only refuse: a one-line host error.</summary>
    private static T Try<T>(Func<T> f)
    {
        try { return f(); }
        catch (EtcdUnavailableException e) { throw new HostException(e.Message); }
    }

    /// <summary>Compare (owner, epoch); on success set <paramref name="then"/>; the failure branch reads the record back.</summary>
    private TxnRequest Move(string guest, string owner, long epoch, params RequestOp[] then)
    {
        var t = new TxnRequest { Compare = { Txn.ValueIs(_keys.Owner(guest), owner), Txn.ValueIs(_keys.Epoch(guest), Num(epoch)) }, Failure = { Txn.GetPrefix(_keys.Guest(guest)) } };
        t.Success.Add(then);
        return t;
    }

    public string? CommitMove(string guest, string source, string destination, long epoch)
    {
        long t0 = Stopwatch.GetTimestamp();
        var t = Move(guest, source, epoch, Txn.Put(_keys.Owner(guest), destination), Txn.Put(_keys.Epoch(guest), Num(epoch + 1)));
        // A destination whose lease is gone, or that was marked draining meanwhile, gets nothing: the source keeps the guest.
        t.Compare.Add(Txn.Exists(_keys.Host(destination)));
        t.Compare.Add(Txn.Missing(_keys.Draining(destination)));
        t.Failure.Add(Txn.Get(_keys.Draining(destination)));
        TxnResponse r;
        // Bounded: the guest is paused, and past the budget the rollback's Reclaim settles the record instead.
        try { r = _etcd.Txn(t, _options.CommitBudget); }
        catch (EtcdUnavailableException e)
        {
            LastCommitTime = Stopwatch.GetElapsedTime(t0);
            Log($"commit of '{guest}' not confirmed: {e.Message}");
            return $"etcd did not confirm the commit of '{guest}' within {_options.CommitBudget.TotalSeconds:F1} s; aborted (the record decides: {source} resumes it only once it has moved the epoch past the commit)";
        }
        LastCommittedAt = Stopwatch.GetTimestamp();
        LastCommitTime = Stopwatch.GetElapsedTime(t0, LastCommittedAt);
        var rec = r.Succeeded ? null : Record(guest, r);
        bool committed = r.Succeeded || rec is { } x && x.Owner == destination && x.Epoch == epoch + 1; // an earlier attempt applied
        lock (_epochs)
        {
            _epochs.Remove(guest);
            if (committed) _committedEpochs[guest] = epoch + 1;
        }
        if (committed)
        {
            Log($"committed '{guest}' to {destination} at epoch {epoch + 1} in {LastCommitTime.TotalMilliseconds:F2} ms");
            return null;
        }
        bool draining = r.Responses.Any(o => o.ResponseRange?.Kvs.Any(kv => kv.Key.ToStringUtf8() == _keys.Draining(destination)) == true);
        string why = rec == null || rec.Owner != source || rec.Epoch != epoch
            ? $"the record of '{guest}' no longer names {source} at epoch {epoch} (it names {rec?.Owner ?? "nobody"} at epoch {rec?.Epoch})"
            : draining ? $"{destination} was marked draining" : $"{destination} has no live lease in the fleet";
        Log($"commit of '{guest}' refused: {why}");
        return $"the fleet refused the commit: {why}";
    }

    private readonly Dictionary<string, long> _committedEpochs = [];

    public long? Reclaim(string guest, string owner, long epoch)
    {
        TxnResponse r;
        // Bounded: an unknown outcome is never guessed, the paused guest waits and the caller asks again (an exit for `lm migrate`).
        try { r = _etcd.Txn(Move(guest, owner, epoch, Txn.Put(_keys.Epoch(guest), Num(epoch + 1))), _options.ReclaimBudget); }
        catch (EtcdUnavailableException e)
        {
            Log($"rollback of '{guest}': etcd unreachable ({e.Message}); the guest stays paused until etcd answers");
            throw new OwnershipUnsettledException($"etcd did not answer within {_options.ReclaimBudget.TotalSeconds:F1} s");
        }
        long? now = r.Succeeded ? epoch + 1 : Record(guest, r) is { } rec && rec.Owner == owner ? rec.Epoch : null;
        lock (_epochs)
        {
            if (now is long e) _epochs[guest] = e;
            else _epochs.Remove(guest);
        }
        return now;
    }

    public bool TakeOver(string guest, string source, string destination, long epoch)
    {
        var t = Move(guest, source, epoch, Txn.Put(_keys.Owner(guest), destination), Txn.Put(_keys.Epoch(guest), Num(epoch + 1)));
        t.Compare.Add(Txn.Missing(_keys.Host(source))); // the source's lease is gone: it can neither resume nor commit
        TxnResponse r;
        try { r = _etcd.Txn(t); }
        catch (EtcdUnavailableException) { return false; }
        return r.Succeeded;
    }

    public Task<bool> AwaitCommitted(string guest, string source, string destination, long epoch, CancellationToken token) =>
        Task.Run(() => WatchRecord(guest, source, destination, epoch, token), CancellationToken.None);

    /// <summary>true: the record names the destination at epoch+1; false: anyone else; null: still the source at epoch.</summary>
    private static bool? Decided(string? owner, long e, string source, string destination, long epoch) =>
        owner == destination && e == epoch + 1 ? true : owner == source && e == epoch ? null : false;

    private async Task<bool> WatchRecord(string guest, string source, string destination, long epoch, CancellationToken token)
    {
        while (!token.IsCancellationRequested)
        {
            try
            {
                using var cts = CancellationTokenSource.CreateLinkedTokenSource(token);
                cts.CancelAfter(TimeSpan.FromSeconds(2)); // re-read now and then: a silent member must not hold us forever
                using var call = _etcd.Watch(cts.Token);
                // A watch from "now" is synced at once; one from a past revision waits for etcd's catch-up
                // loop (~100 ms) whenever anything was written in between, the commit included. The read
                // after the watch is confirmed sees every write the watch will not deliver.
                await call.RequestStream.WriteAsync(new WatchRequest { CreateRequest = new WatchCreateRequest { Key = EtcdClient.Bytes(_keys.Guest(guest)), RangeEnd = EtcdClient.PrefixEnd(_keys.Guest(guest)) } });
                if (!await call.ResponseStream.MoveNext(cts.Token) || call.ResponseStream.Current.Canceled) continue;
                var read = _etcd.GetPrefix(_keys.Guest(guest));
                var rec = GuestRecord.From(_keys, guest, read.Kvs);
                string? owner = rec?.Owner;
                long e = rec?.Epoch ?? 0;
                if (Decided(owner, e, source, destination, epoch) is bool first) return Settled(guest, first, e);
                long readRevision = read.Header.Revision;
                while (await call.ResponseStream.MoveNext(cts.Token))
                {
                    var w = call.ResponseStream.Current;
                    if (w.Canceled) break;
                    foreach (var ev in w.Events)
                    {
                        if (ev.Kv.ModRevision <= readRevision) continue; // the read already has it (or a later value)
                        string k = ev.Kv.Key.ToStringUtf8();
                        bool deleted = ev.Type == Event.Types.EventType.Delete;
                        if (k == _keys.Owner(guest)) owner = deleted ? null : ev.Kv.Value.ToStringUtf8();
                        else if (k == _keys.Epoch(guest)) e = deleted ? 0 : long.Parse(ev.Kv.Value.ToStringUtf8(), CultureInfo.InvariantCulture);
                    }
                    if (w.Events.Count > 0 && Decided(owner, e, source, destination, epoch) is bool d) return Settled(guest, d, e);
                }
            }
            catch (Exception ex) when (ex is RpcException or EtcdUnavailableException or IOException or OperationCanceledException or InvalidOperationException)
            {
                if (token.IsCancellationRequested) break;
                // The periodic renewal re-reads at once (a commit in between would wait for it); a failure backs off.
                if (!(ex is OperationCanceledException || ex is RpcException { StatusCode: StatusCode.Cancelled })) await Task.Delay(20, CancellationToken.None);
            }
        }
        return false;
    }

    private bool Settled(string guest, bool ours, long epoch)
    {
        LastRecordSeenAt = Stopwatch.GetTimestamp();
        if (ours) lock (_epochs) _epochs[guest] = epoch;
        return ours;
    }

    public void HandedOver(string guest, Machine paused)
    {
        long epoch;
        lock (_epochs) if (!_committedEpochs.Remove(guest, out epoch)) return;
        if (_options.CheckpointDir == null) return;
        // The state the destination starts from: a recover after the destination died loses nothing it had not run.
        try { WriteCheckpoint(guest, epoch, CheckpointFile.Create(paused), replace: false, paused.Icount, paused.Disk?.Snapshot(), paused.Disk?.ReadOnly ?? false); }
        catch (IOException e) { Log($"checkpoint of '{guest}' not written: {e.Message}"); }
    }

    public void Forget(string guest, string owner)
    {
        lock (_epochs) _epochs.Remove(guest);
        try
        {
            _etcd.Txn(new TxnRequest { Compare = { Txn.ValueIs(_keys.Owner(guest), owner) }, Success = { Txn.DeletePrefix(_keys.Guest(guest)) } });
            if (_options.CheckpointDir != null) Directory.Delete(Path.Combine(_options.CheckpointDir, guest), recursive: true);
        }
        catch (Exception e) when (e is EtcdUnavailableException or IOException) { Log($"record of '{guest}' not removed: {e.Message}"); }
    }
}
