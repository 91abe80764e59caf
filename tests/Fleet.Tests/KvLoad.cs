using LiveMigration.Cli.Demo;
using LiveMigration.Migration.Hosting;

namespace LiveMigration.Fleet.Tests;

/// <summary>
/// SETs under load through a guest's console while a test crashes hosts: every value tried is kept
/// per key in order, with the last one acknowledged. A crash ends the load (the client cannot reach
/// the guest); a wrong answer fails the test. A key may afterwards hold its last acknowledged value
/// or one tried after it (a SET that ran but whose OK was lost), never an older one.
/// </summary>
internal sealed class KvLoad : IDisposable
{
    private const int Keys = 200; // rewritten: the guest's table never fills
    private readonly string _name;
    private readonly KvClient _kv;
    private readonly List<string>[] _tried = [.. Enumerable.Range(0, Keys).Select(_ => new List<string>())];
    private readonly int[] _acked = [.. Enumerable.Repeat(-1, Keys)];
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _task;
    private volatile Exception? _wrong;
    private long _sets;

    public KvLoad(string host, string name = "kv")
    {
        _name = name;
        _kv = new KvClient(host, name); // the guest is ready already: its 'kv ready' went to an earlier client
        _task = Task.Run(Run);
    }

    public long Acknowledged => Interlocked.Read(ref _sets);

    private void Run()
    {
        for (int i = 0; !_stop.IsCancellationRequested; i++)
        {
            int k = i % Keys;
            string value = $"w{i}";
            lock (_tried) _tried[k].Add(value);
            try { _kv.Set($"L{k}", value); }
            catch (InvalidDataException e) { _wrong = e; return; }
            catch (Exception e) when (e is IOException or TimeoutException or System.Net.Sockets.SocketException or HostException) { return; } // its host died
            lock (_tried) _acked[k] = _tried[k].Count - 1;
            Interlocked.Increment(ref _sets);
        }
    }

    /// <summary>What is acknowledged now (a floor for a guest recovered from a checkpoint taken after this).</summary>
    public int[] Snapshot() { lock (_tried) return [.. _acked]; }

    public void Stop()
    {
        _stop.Cancel();
        Assert.True(_task.Wait(TimeSpan.FromSeconds(60)), "the kv load did not stop");
        Assert.Null(_wrong);
    }

    /// <summary>
    /// Reads every key on <paramref name="host"/>: each holds its value acknowledged at <paramref name="floor"/>
    /// (null: the last acknowledged) or one tried later; a key with nothing acknowledged may be missing.
    /// </summary>
    public void AssertKept(string host, int[]? floor = null)
    {
        floor ??= Snapshot();
        using var kv = new KvClient(host, _name);
        for (int k = 0; k < Keys; k++)
        {
            string got = kv.Get($"L{k}");
            List<string> allowed;
            lock (_tried) allowed = floor[k] < 0 ? [.. _tried[k], "NOTFOUND"] : _tried[k][floor[k]..];
            Assert.True(allowed.Contains(got), $"L{k} = '{got}' on {host}; acknowledged {(floor[k] < 0 ? "nothing" : $"'{_tried[k][floor[k]]}'")}, allowed {string.Join(",", allowed.TakeLast(5))}");
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _task.Wait(TimeSpan.FromSeconds(30));
        _kv.Dispose();
    }
}
