using System.Diagnostics;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Fleet;

/// <summary>One guest's outcome in a drain.</summary>
public sealed record DrainResult(string Guest, string Destination, MigrationReport? Report, string? Error)
{
    public bool Success => Report is { Success: true, DigestVerified: true };
}

/// <summary>
/// `lm drain HOST`: marks HOST draining (placement and the host itself then refuse new guests) and
/// migrates every guest it owns, up to <c>parallel</c> at a time, each to the host with the most
/// free memory at the moment it starts.
/// </summary>
public static class FleetDrain
{
    public static (List<DrainResult> Results, TimeSpan Elapsed) Run(FleetAdmin fleet, string host, int parallel, MigrateCommand template,
        Action<string, MigrationProgress>? progress = null)
    {
        if (parallel < 1) throw new HostException("--parallel must be at least 1");
        var sw = Stopwatch.StartNew();
        fleet.SetDraining(host, true);
        var guests = fleet.Guests().Where(g => g.Owner == host).ToList();
        var queue = new Queue<GuestRecord>(guests);
        var reserved = new Dictionary<string, ulong>();
        var results = new List<DrainResult>();
        var workers = Enumerable.Range(0, Math.Min(parallel, Math.Max(1, guests.Count))).Select(_ => new Thread(() =>
        {
            while (true)
            {
                GuestRecord g;
                string to;
                lock (queue)
                {
                    if (!queue.TryDequeue(out g!)) return;
                    try { to = fleet.Place(g.Info.MemoryBytes, host, reserved); }
                    catch (HostException e) { lock (results) results.Add(new DrainResult(g.Name, "", null, e.Message)); continue; }
                    reserved[to] = reserved.GetValueOrDefault(to) + g.Info.MemoryBytes;
                }
                DrainResult result;
                try
                {
                    using var c = HostClient.Connect(host);
                    var cmd = template.Clone();
                    cmd.Name = g.Name;
                    cmd.Target = to;
                    var report = c.Migrate(cmd, p => progress?.Invoke(g.Name, p));
                    result = new DrainResult(g.Name, to, report, report.Success ? null : report.Error);
                }
                catch (Exception e) when (e is HostException or IOException or System.Net.Sockets.SocketException or ProtocolException)
                {
                    result = new DrainResult(g.Name, to, null, e.Message);
                }
                lock (results) results.Add(result);
            }
        }) { IsBackground = true, Name = "drain" }).ToList();
        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());
        return ([.. results.OrderBy(r => r.Guest, StringComparer.Ordinal)], sw.Elapsed);
    }
}
