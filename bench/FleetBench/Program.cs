// Figures for the etcd-backed fleet on loopback: the time the commit transaction adds to the
// switchover, downtime with and without etcd, and the time to drain a host of N kv guests.
//   dotnet run -c Release --project bench/FleetBench [-- --runs 20 --drain 8 --data-dir DIR]
// --data-dir puts etcd's data (and its WAL) under DIR instead of the temporary directory: with
// /dev/shm (tmpfs, where fsync costs nothing and nothing is durable) it shows what the disk's fsync
// adds to the commit. That is a diagnosis, never a way to run a fleet.
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using LiveMigration.Fleet;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;

int runs = Arg("--runs", 20), drainGuests = Arg("--drain", 8);
string dir = Path.Combine(ArgString("--data-dir") ?? Path.GetTempPath(), $"lm-fleetbench-{Guid.NewGuid():N}");
int client = FreePort(), peer = FreePort();
var etcd = Process.Start(new ProcessStartInfo("etcd", $"--name b --data-dir {dir} --listen-client-urls http://127.0.0.1:{client} --advertise-client-urls http://127.0.0.1:{client} " +
    $"--listen-peer-urls http://127.0.0.1:{peer} --initial-advertise-peer-urls http://127.0.0.1:{peer} --initial-cluster b=http://127.0.0.1:{peer} --logger zap --log-level error")
    { RedirectStandardError = true, RedirectStandardOutput = true })!;
string endpoint = $"http://127.0.0.1:{client}";
try
{
    byte[] kv = File.ReadAllBytes(LiveMigration.Tests.Shared.RepoPaths.Guest("kv"));
    using var probe = new FleetAdmin(endpoint);
    for (var until = DateTime.UtcNow.AddSeconds(20); ; Thread.Sleep(100))
    {
        try { probe.Hosts(); break; } catch (HostException) when (DateTime.UtcNow < until) { }
    }
    Console.WriteLine($"fleet bench: kv guest (16 MiB), log shipping, {runs} migrations; etcd {endpoint}, data in {dir}");
    RoundTrips(endpoint, 200);
    var (pairDown, _, _) = Measure(null, kv, runs);
    var (fleetDown, commits, seen) = Measure(endpoint, kv, runs);
    Console.WriteLine($"downtime without etcd : median {Median(pairDown):F2} ms, p90 {P90(pairDown):F2} ms");
    Console.WriteLine($"downtime with etcd    : median {Median(fleetDown):F2} ms, p90 {P90(fleetDown):F2} ms");
    Console.WriteLine($"etcd commit (txn)     : median {Median(commits):F2} ms, p90 {P90(commits):F2} ms, min {commits.Min():F2} ms");
    Console.WriteLine($"record seen by the destination (watch), after the commit returned: median {Median(seen):F2} ms, p90 {P90(seen):F2} ms");
    Drain(endpoint, kv, drainGuests);
}
finally
{
    etcd.Kill();
    etcd.WaitForExit();
    try { Directory.Delete(dir, true); } catch (IOException) { }
}

(List<double> Downtime, List<double> Commit, List<double> Seen) Measure(string? etcdUrl, byte[] elf, int n)
{
    string prefix = $"/bench{Guid.NewGuid():N}/";
    GuestHost New() => new(new HostOptions
    {
        Ownership = etcdUrl == null ? null : FleetMember.Join(new FleetOptions { Endpoints = [etcdUrl], Prefix = prefix, CapacityBytes = 4UL << 30 }),
    });
    using var a = New();
    using var b = New();
    using (var c = HostClient.Connect(a.Address)) c.Start("kv", elf, 16 << 20, "kv");
    Thread.Sleep(300);
    var down = new List<double>();
    var commit = new List<double>();
    var seen = new List<double>();
    var (from, to) = (a, b);
    for (int i = 0; i < n + 2; i++)
    {
        using var c = HostClient.Connect(from.Address);
        var r = c.Migrate(new MigrateCommand { Name = "kv", Target = to.Address, Strategy = Strategy.Log });
        if (!r.Success) throw new InvalidOperationException(r.Error);
        if (i >= 2) // the first two warm both directions
        {
            down.Add(r.DowntimeSeconds * 1000);
            if (from.Ownership is FleetMember m && to.Ownership is FleetMember d)
            {
                commit.Add(m.LastCommitTime.TotalMilliseconds);
                seen.Add(Stopwatch.GetElapsedTime(m.LastCommittedAt, d.LastRecordSeenAt).TotalMilliseconds);
            }
        }
        (from, to) = (to, from);
        Thread.Sleep(100);
    }
    return (down, commit, seen);
}

// The commit's parts: a linearizable read is one gRPC round trip through the leader (no disk);
// the commit's transaction adds the raft write, whose WAL fdatasync is the disk's.
void RoundTrips(string etcdUrl, int n)
{
    using var c = new LiveMigration.Fleet.Etcd.EtcdClient([etcdUrl]);
    string key = $"/rt{Guid.NewGuid():N}/epoch";
    c.Put(key, "0");
    var reads = new List<double>();
    var txns = new List<double>();
    for (int i = 0; i < n + 20; i++)
    {
        long t0 = Stopwatch.GetTimestamp();
        c.Get(key);
        long t1 = Stopwatch.GetTimestamp();
        var t = new LiveMigration.Fleet.Etcd.Api.TxnRequest { Compare = { LiveMigration.Fleet.Etcd.Txn.ValueIs(key, $"{i}") }, Success = { LiveMigration.Fleet.Etcd.Txn.Put(key, $"{i + 1}") } };
        if (!c.Txn(t).Succeeded) throw new InvalidOperationException("round-trip txn refused");
        long t2 = Stopwatch.GetTimestamp();
        if (i < 20) continue; // warm-up
        reads.Add(Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds);
        txns.Add(Stopwatch.GetElapsedTime(t1, t2).TotalMilliseconds);
    }
    Console.WriteLine($"etcd round trips ({n} each): linearizable read median {Median(reads):F2} ms (p90 {P90(reads):F2}), compare-and-put txn median {Median(txns):F2} ms (p90 {P90(txns):F2})");
}

void Drain(string etcdUrl, byte[] elf, int guests)
{
    foreach (int parallel in new[] { 1, 2 })
    {
        // Fresh hosts each time: every drain evacuates all the guests from one host to the two others.
        string prefix = $"/drain{Guid.NewGuid():N}/";
        var hosts = Enumerable.Range(0, 3).Select(_ => new GuestHost(new HostOptions { Ownership = FleetMember.Join(new FleetOptions { Endpoints = [etcdUrl], Prefix = prefix, CapacityBytes = 4UL << 30 }) })).ToList();
        try
        {
            for (int i = 0; i < guests; i++)
                using (var c = HostClient.Connect(hosts[0].Address)) c.Start($"kv{i}", elf, 16 << 20, "kv");
            Thread.Sleep(1000); // host records republished
            using var fleet = new FleetAdmin(etcdUrl, prefix);
            var (results, elapsed) = FleetDrain.Run(fleet, hosts[0].Address, parallel, new MigrateCommand { Strategy = Strategy.Log });
            Console.WriteLine($"drain of {results.Count} guests, --parallel {parallel}: {elapsed.TotalSeconds:F2} s, {results.Count(r => r.Success && r.Report?.DigestVerified == true)} moved with a verified digest, " +
                $"median downtime {Median([.. results.Where(r => r.Report != null).Select(r => r.Report!.DowntimeSeconds * 1000)]):F2} ms");
        }
        finally { hosts.ForEach(h => h.Dispose()); }
    }
}

static double Median(List<double> xs) { var s = xs.Order().ToList(); return s.Count == 0 ? 0 : s[s.Count / 2]; }
static double P90(List<double> xs) { var s = xs.Order().ToList(); return s.Count == 0 ? 0 : s[(int)(s.Count * 0.9)]; }
static int FreePort() { var l = new TcpListener(IPAddress.Loopback, 0); l.Start(); int p = ((IPEndPoint)l.LocalEndpoint).Port; l.Stop(); return p; }
string? ArgString(string name) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? args[i + 1] : null; }
int Arg(string name, int def) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1]) : def; }
