using System.Diagnostics;
using Google.Protobuf;
using Grpc.Core;
using Grpc.Net.Client;
using LiveMigration.Fleet.Etcd.Api;

namespace LiveMigration.Fleet.Etcd;

/// <summary>etcd cannot be reached (no member answered in time); what was asked may or may not have happened.</summary>
public sealed class EtcdUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// A small client for etcd's v3 gRPC API over one or more member endpoints. A call that fails
/// because its member is down, has no leader or does not answer in time is retried on the next
/// member until <see cref="CallBudget"/> runs out; then it throws <see cref="EtcdUnavailableException"/>.
/// Reads are linearizable (through the leader). Thread-safe.
/// </summary>
public sealed class EtcdClient : IDisposable
{
    private readonly GrpcChannel[] _channels;
    private readonly string[] _endpoints;
    private int _current;
    private bool _answered;
    private static readonly TimeSpan FirstCallTimeout = TimeSpan.FromSeconds(10);

    public EtcdClient(IEnumerable<string> endpoints)
    {
        _endpoints = [.. endpoints.Select(Normalize)];
        if (_endpoints.Length == 0) throw new ArgumentException("no etcd endpoint given");
        _channels = [.. _endpoints.Select(e => GrpcChannel.ForAddress(e, new GrpcChannelOptions
        {
            HttpHandler = new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromMilliseconds(500), EnableMultipleHttp2Connections = true },
        }))];
    }

    /// <summary>Parses "URL[,URL...]" as given to `--etcd`.</summary>
    public static EtcdClient Parse(string list) => new(list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));

    public IReadOnlyList<string> Endpoints => _endpoints;

    /// <summary>Deadline of one attempt on one member.</summary>
    public TimeSpan AttemptTimeout { get; init; } = TimeSpan.FromMilliseconds(750);

    /// <summary>How long a call keeps trying members before it gives up.</summary>
    public TimeSpan CallBudget { get; init; } = TimeSpan.FromSeconds(3);

    private static string Normalize(string e) => e.Contains("://") ? e : "http://" + e;

    internal CallInvoker Invoker(out int index)
    {
        index = Volatile.Read(ref _current) % _channels.Length;
        return _channels[index].CreateCallInvoker();
    }

    /// <summary>The member after <paramref name="failed"/> becomes the one to use (unless another call moved on already).</summary>
    internal void Rotate(int failed) => Interlocked.CompareExchange(ref _current, (failed + 1) % _channels.Length, failed);

    private T Call<T>(Func<CallInvoker, DateTime, T> call, TimeSpan? budget = null)
    {
        var sw = Stopwatch.StartNew();
        var limit = (budget ?? CallBudget) + (Volatile.Read(ref _answered) ? TimeSpan.Zero : FirstCallTimeout);
        Exception? last = null;
        while (true)
        {
            var invoker = Invoker(out int index);
            // The first call of a process also pays for JIT-compiling the HTTP/2 and gRPC stack.
            var attempt = Volatile.Read(ref _answered) ? AttemptTimeout : FirstCallTimeout;
            try
            {
                var result = call(invoker, DateTime.UtcNow + attempt);
                Volatile.Write(ref _answered, true);
                return result;
            }
            catch (RpcException e) when (Retryable(e))
            {
                last = e;
                Rotate(index);
            }
            if (sw.Elapsed > limit) throw new EtcdUnavailableException($"etcd did not answer ({string.Join(",", _endpoints)}): {last?.Message}", last);
            Thread.Sleep(20);
        }
    }

    /// <summary>Failures that say nothing about the request itself: try another member.</summary>
    internal static bool Retryable(RpcException e) => e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded
        or StatusCode.Internal or StatusCode.Unknown or StatusCode.Cancelled or StatusCode.ResourceExhausted;

    public static ByteString Bytes(string s) => ByteString.CopyFromUtf8(s);

    /// <summary>The end of the range of every key that starts with <paramref name="prefix"/>.</summary>
    public static ByteString PrefixEnd(string prefix)
    {
        var b = System.Text.Encoding.UTF8.GetBytes(prefix);
        b[^1]++; // prefixes here end in '/', never 0xff
        return ByteString.CopyFrom(b);
    }

    public RangeResponse Get(string key) =>
        Call((i, d) => new KV.KVClient(i).Range(new RangeRequest { Key = Bytes(key) }, deadline: d));

    public RangeResponse GetPrefix(string prefix) =>
        Call((i, d) => new KV.KVClient(i).Range(new RangeRequest { Key = Bytes(prefix), RangeEnd = PrefixEnd(prefix) }, deadline: d));

    public PutResponse Put(string key, string value, long lease = 0) =>
        Call((i, d) => new KV.KVClient(i).Put(new PutRequest { Key = Bytes(key), Value = Bytes(value), Lease = lease }, deadline: d));

    public DeleteRangeResponse Delete(string key, bool prefix = false) =>
        Call((i, d) => new KV.KVClient(i).DeleteRange(prefix ? new DeleteRangeRequest { Key = Bytes(key), RangeEnd = PrefixEnd(key) } : new DeleteRangeRequest { Key = Bytes(key) }, deadline: d));

    /// <summary>
    /// One transaction. A retried attempt may find its own earlier attempt applied: callers make
    /// the comparisons such that the failure branch (which should read the keys back) tells.
    /// </summary>
    public TxnResponse Txn(TxnRequest request, TimeSpan? budget = null) =>
        Call((i, d) => new KV.KVClient(i).Txn(request, deadline: d), budget);

    public long GrantLease(TimeSpan ttl)
    {
        var r = Call((i, d) => new Lease.LeaseClient(i).LeaseGrant(new LeaseGrantRequest { TTL = (long)Math.Ceiling(ttl.TotalSeconds) }, deadline: d));
        if (!string.IsNullOrEmpty(r.Error)) throw new EtcdUnavailableException($"etcd refused a lease: {r.Error}");
        return r.ID;
    }

    public void RevokeLease(long id) =>
        Call((i, d) => new Lease.LeaseClient(i).LeaseRevoke(new LeaseRevokeRequest { ID = id }, deadline: d), TimeSpan.FromSeconds(1));

    /// <summary>The status of the member at <paramref name="endpoint"/> (tests find the leader with it).</summary>
    public StatusResponse Status(int endpoint) =>
        new Maintenance.MaintenanceClient(_channels[endpoint].CreateCallInvoker()).Status(new StatusRequest(), deadline: DateTime.UtcNow + AttemptTimeout);

    /// <summary>Watches [key, rangeEnd) from <paramref name="startRevision"/> on the current member; the caller handles failures.</summary>
    public AsyncDuplexStreamingCall<WatchRequest, WatchResponse> Watch(CancellationToken token) =>
        new Watch.WatchClient(Invoker(out _)).Watch(cancellationToken: token);

    public void Dispose()
    {
        foreach (var c in _channels) c.Dispose();
    }
}

/// <summary>Builders for the comparisons and operations of a transaction.</summary>
public static class Txn
{
    public static Compare ValueIs(string key, string value) =>
        new() { Key = EtcdClient.Bytes(key), Target = Compare.Types.CompareTarget.Value, Result = Compare.Types.CompareResult.Equal, Value = EtcdClient.Bytes(value) };

    public static Compare Missing(string key) =>
        new() { Key = EtcdClient.Bytes(key), Target = Compare.Types.CompareTarget.Version, Result = Compare.Types.CompareResult.Equal, Version = 0 };

    public static Compare Exists(string key) =>
        new() { Key = EtcdClient.Bytes(key), Target = Compare.Types.CompareTarget.Version, Result = Compare.Types.CompareResult.Greater, Version = 0 };

    public static RequestOp Put(string key, string value, long lease = 0) =>
        new() { RequestPut = new PutRequest { Key = EtcdClient.Bytes(key), Value = EtcdClient.Bytes(value), Lease = lease } };

    public static RequestOp Get(string key) =>
        new() { RequestRange = new RangeRequest { Key = EtcdClient.Bytes(key) } };

    public static RequestOp GetPrefix(string prefix) =>
        new() { RequestRange = new RangeRequest { Key = EtcdClient.Bytes(prefix), RangeEnd = EtcdClient.PrefixEnd(prefix) } };

    public static RequestOp DeletePrefix(string prefix) =>
        new() { RequestDeleteRange = new DeleteRangeRequest { Key = EtcdClient.Bytes(prefix), RangeEnd = EtcdClient.PrefixEnd(prefix) } };
}
