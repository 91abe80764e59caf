using LiveMigration.Cli.Demo;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using Xunit.Abstractions;

namespace LiveMigration.Fleet.Tests;

/// <summary>
/// kill -9 of the source, the destination or the etcd leader at the protocol's phases, with real
/// etcd and real `lm host` processes: afterwards exactly one host runs the guest (or none, and then
/// `lm recover` brings it back), the fleet view agrees, and no acknowledged kv SET is lost.
/// </summary>
public sealed class CrashTests(ITestOutputHelper output)
{
    public enum Victim { Source, Destination, Leader }

    public static TheoryData<Victim, string> Cases() => new()
    {
        { Victim.Source, "Checkpoint" }, { Victim.Source, "Log" }, { Victim.Source, "BeforeCommit" }, { Victim.Source, "AfterAck" },
        { Victim.Destination, "Checkpoint" }, { Victim.Destination, "Log" }, { Victim.Destination, "BeforeCommit" }, { Victim.Destination, "AfterAck" },
        { Victim.Leader, "Checkpoint" }, { Victim.Leader, "Log" }, { Victim.Leader, "BeforeCommit" }, { Victim.Leader, "AfterAck" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_kill_at_a_phase_leaves_exactly_one_runner_or_a_recoverable_guest_and_loses_no_acknowledged_set(Victim victim, string point)
    {
        using var etcd = new EtcdCluster(victim == Victim.Leader ? 3 : 1);
        using var fleet = new Fleet(output, etcd);
        string fault = victim == Victim.Source ? $"{point}:crash" : $"{point}:hold-2500";
        var a = fleet.StartHost(3, "--fault-at", fault);
        var b = fleet.StartHost(3);
        var c = fleet.StartHost(3);
        Assert.Equal(0, fleet.Run("start", "--host", a.Address, Guests.Path("kv"), "--name", "kv", "--mem", "16M").Code);
        var acked = WriteAndCheckpoint(fleet, a.Address, 40);

        var migrate = Task.Run(() => fleet.Run("migrate", "kv", "--from", a.Address, "--to", b.Address, "--strategy", "log", "--json"));
        if (victim == Victim.Source) Assert.True(a.Process.WaitForExit(60000), "the source did not crash at its fault point");
        else
        {
            a.WaitLogged($"holding at {point}");
            if (victim == Victim.Destination) b.Kill();
            else etcd.Kill(etcd.Leader());
        }
        Assert.True(migrate.Wait(TimeSpan.FromSeconds(90)), "lm migrate did not finish");

        var live = new[] { a, b, c }.Where(h => !h.Process.HasExited).ToList();
        string runner = Settle(fleet, live, "kv");
        if (victim == Victim.Leader) Assert.Equal(b.Address, runner); // etcd failed over: the migration went through
        if (victim == Victim.Source && point is "BeforeCommit" or "AfterAck") Assert.Equal(b.Address, runner); // the destination took over / had the record
        AssertAcked(runner, acked);
    }

    /// <summary>
    /// Waits until exactly one live host runs the guest and its record names that host, or until no
    /// host runs it and its owner's lease is gone; then recovers it with `lm recover`. Returns the runner.
    /// </summary>
    internal static string Settle(Fleet fleet, List<LmHost> live, string name)
    {
        var liveAddresses = live.Select(h => h.Address).ToList();
        using var admin = new FleetAdmin(fleet.Etcd.Endpoints);
        string? runner = null;
        Fleet.Wait(() =>
        {
            var runners = liveAddresses.Where(h => Runs(h, name)).ToList();
            Assert.True(runners.Count <= 1, $"two hosts run '{name}': {string.Join(", ", runners)}");
            var owner = admin.Guest(name).Owner;
            if (runners.Count == 1 && owner == runners[0]) { runner = runners[0]; return true; }
            // Recoverable only once nobody can still take it: no live host holds an incoming copy either.
            return runners.Count == 0 && !admin.Hosts().Any(h => h.Address == owner) && !liveAddresses.Any(h => Holds(h, name));
        }, 30000, $"'{name}' to settle on one host, or to be recoverable");
        if (runner != null)
        {
            Assert.Contains(runner, fleet.Fleetctl("guests").Out); // the fleet view agrees
            return runner;
        }
        string to = liveAddresses.First();
        var r = fleet.Fleetctl("recover", name, "--to", to);
        Assert.True(r.Code == 0, r.Err);
        Assert.True(Runs(to, name));
        Assert.Single(liveAddresses.Where(h => Runs(h, name)));
        return to;
    }

    /// <summary>The host has the guest in any state but "moved" (running, or arriving and able to take it).</summary>
    private static bool Holds(string host, string name)
    {
        try
        {
            using var c = HostClient.Connect(host);
            return c.Status().Guests.Any(g => g.Name == name && g.Status != GuestStatus.Moved);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or HostException) { return false; }
    }

    internal static bool Runs(string host, string name)
    {
        try
        {
            using var c = HostClient.Connect(host);
            return c.Status().Guests.Any(g => g.Name == name && g.Status is GuestStatus.Running or GuestStatus.Paused or GuestStatus.Fenced or GuestStatus.Fencing);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or HostException) { return false; }
    }

    /// <summary>Writes keys, then waits until a periodic checkpoint newer than the last acknowledged SET is on disk.</summary>
    internal static Dictionary<string, string> WriteAndCheckpoint(Fleet fleet, string host, int count, string name = "kv")
    {
        using var kv = new KvClient(host, name);
        kv.WaitReady();
        for (int i = 0; i < count; i++) kv.Set($"k{i}", $"v{i}-{Guid.NewGuid():N}"[..12]);
        var after = DateTime.UtcNow.AddMilliseconds(100);
        Fleet.Wait(() => Directory.Exists(Path.Combine(fleet.CheckpointDir, name)) &&
            Directory.GetFiles(Path.Combine(fleet.CheckpointDir, name), "*.ckpt").Any(f => File.GetLastWriteTimeUtc(f) > after), 15000, "a checkpoint after the last SET");
        return new Dictionary<string, string>(kv.Acknowledged);
    }

    internal static void AssertAcked(string host, Dictionary<string, string> acked, string name = "kv")
    {
        using var kv = new KvClient(host, name);
        foreach (var (k, v) in acked) Assert.Equal(v, kv.Get(k));
    }
}
