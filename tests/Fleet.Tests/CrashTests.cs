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

    /// <summary>RecordSeen is the destination's point (the record committed, the guest not yet resumed); the others are the source's.</summary>
    public static TheoryData<Victim, string> Cases() => new()
    {
        { Victim.Source, "Checkpoint" }, { Victim.Source, "Log" }, { Victim.Source, "BeforeCommit" }, { Victim.Source, "AfterAck" }, { Victim.Source, "RecordSeen" },
        { Victim.Destination, "Checkpoint" }, { Victim.Destination, "Log" }, { Victim.Destination, "BeforeCommit" }, { Victim.Destination, "AfterAck" }, { Victim.Destination, "RecordSeen" },
        { Victim.Leader, "Checkpoint" }, { Victim.Leader, "Log" }, { Victim.Leader, "BeforeCommit" }, { Victim.Leader, "AfterAck" }, { Victim.Leader, "RecordSeen" },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void A_kill_at_a_phase_leaves_exactly_one_runner_or_a_recoverable_guest_and_loses_no_acknowledged_set(Victim victim, string point)
    {
        using var etcd = new EtcdCluster(victim == Victim.Leader ? 3 : 1);
        using var fleet = new Fleet(output, etcd);
        bool atDestination = Enum.TryParse<DestinationFaultPoint>(point, out _);
        // The host at the point crashes itself there when it is the victim; otherwise it holds there while the test kills the victim.
        bool selfCrash = atDestination ? victim == Victim.Destination : victim == Victim.Source;
        string fault = selfCrash ? $"{point}:crash" : $"{point}:hold-2500";
        string[] none = [], faultAt = ["--fault-at", fault];
        var a = fleet.StartHost(3, atDestination ? none : faultAt);
        var b = fleet.StartHost(3, atDestination ? faultAt : none);
        var c = fleet.StartHost(3);
        var (atPoint, victimHost) = atDestination ? (b, victim == Victim.Source ? a : b) : (a, victim == Victim.Destination ? b : a);
        Assert.Equal(0, fleet.Run("start", "--host", a.Address, Guests.Path("kv"), "--name", "kv", "--mem", "16M").Code);
        var acked = WriteAndCheckpoint(fleet, a.Address, 40);
        using var load = new KvLoad(a.Address);
        var floor = LoadInCheckpoint(fleet, load);

        var migrate = Task.Run(() => fleet.Run("migrate", "kv", "--from", a.Address, "--to", b.Address, "--strategy", "log", "--json"));
        if (selfCrash) Assert.True(atPoint.Process.WaitForExit(60000), $"{atPoint.Address} did not crash at its fault point");
        else
        {
            atPoint.WaitLogged($"holding at {point}");
            if (victim == Victim.Leader) etcd.Kill(etcd.Leader());
            else victimHost.Kill();
        }
        Assert.True(migrate.Wait(TimeSpan.FromSeconds(90)), "lm migrate did not finish");

        var live = new[] { a, b, c }.Where(h => !h.Process.HasExited).ToList();
        var (runner, recovered) = Settle(fleet, live, "kv");
        load.Stop();
        output.WriteLine($"{load.Acknowledged} SETs acknowledged under load; '{runner}' runs the guest{(recovered ? " (recovered)" : "")}");
        Assert.True(load.Acknowledged > 0, "no SET was acknowledged under load");
        if (victim == Victim.Leader) Assert.Equal(b.Address, runner); // etcd failed over: the migration went through
        if (victim == Victim.Source && point is "BeforeCommit" or "AfterAck" or "RecordSeen") Assert.Equal(b.Address, runner); // the destination took over / had the record
        AssertAcked(runner, acked);
        // Only a source that died before the commit loses what ran after its last checkpoint (recover restarts from it);
        // every other case keeps every acknowledged SET (a live copy, or the state handed over at the commit).
        bool fromPeriodicCheckpoint = victim == Victim.Source && point is "Checkpoint" or "Log";
        if (fromPeriodicCheckpoint) Assert.True(recovered, "the source died before the commit: only `lm recover` can bring the guest back");
        load.AssertKept(runner, fromPeriodicCheckpoint ? floor : null);
    }

    /// <summary>Takes what the load has acknowledged now and waits until a checkpoint taken after it is on disk.</summary>
    internal static int[] LoadInCheckpoint(Fleet fleet, KvLoad load, string name = "kv")
    {
        Fleet.Wait(() => load.Acknowledged > 20, 15000, "the kv load to get going");
        var floor = load.Snapshot();
        var after = DateTime.UtcNow.AddMilliseconds(100);
        Fleet.Wait(() => Directory.GetFiles(Path.Combine(fleet.CheckpointDir, name), "*.ckpt").Any(f => File.GetLastWriteTimeUtc(f) > after), 15000, "a checkpoint under load");
        return floor;
    }

    /// <summary>
    /// Waits until exactly one live host runs the guest and its record names that host, or until no
    /// host runs it and its owner's lease is gone; then recovers it with `lm recover`. Returns the runner, and whether it was recovered.
    /// </summary>
    internal static (string Runner, bool Recovered) Settle(Fleet fleet, List<LmHost> live, string name)
    {
        var liveAddresses = live.Select(h => h.Address).ToList();
        using var admin = new FleetAdmin(fleet.Etcd.Endpoints);
        string? runner = null;
        Fleet.Wait(() =>
        {
            var runners = liveAddresses.Where(h => Runs(h, name)).ToList();
            Assert.True(runners.Count <= 1, $"two hosts run '{name}': {string.Join(", ", runners)}");
            string? owner;
            try { owner = admin.Guest(name).Owner; }
            catch (HostException) { return false; } // a killed leader: the members are still electing; ask again
            if (runners.Count == 1 && owner == runners[0]) { runner = runners[0]; return true; }
            // Recoverable only once nobody can still take it: no live host holds an incoming copy either.
            try { return runners.Count == 0 && !admin.Hosts().Any(h => h.Address == owner) && !liveAddresses.Any(h => Holds(h, name)); }
            catch (HostException) { return false; }
        }, 30000, $"'{name}' to settle on one host, or to be recoverable");
        if (runner != null)
        {
            Assert.Contains(runner, fleet.Fleetctl("guests").Out); // the fleet view agrees
            return (runner, false);
        }
        string to = liveAddresses.First();
        var r = fleet.Fleetctl("recover", name, "--to", to);
        Assert.True(r.Code == 0, r.Err);
        Assert.True(Runs(to, name));
        Assert.Single(liveAddresses.Where(h => Runs(h, name)));
        return (to, true);
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
