using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using Xunit.Abstractions;

namespace LiveMigration.Fleet.Tests;

internal static class Guests
{
    public static byte[] Elf(string name) => File.ReadAllBytes(LiveMigration.Tests.Shared.RepoPaths.Guest(name));
    public static string Path(string name) => LiveMigration.Tests.Shared.RepoPaths.Guest(name);
}

/// <summary>Fleet hosts side by side in this process, each a member of one etcd fleet under its own key prefix.</summary>
internal sealed class InProcessFleet : IDisposable
{
    private readonly ITestOutputHelper _output;
    private readonly List<GuestHost> _hosts = [];

    public InProcessFleet(ITestOutputHelper output, EtcdCluster etcd, int count = 2, double leaseTtl = 3, Func<FaultPoint, bool>? fault = null)
    {
        _output = output;
        Etcd = etcd;
        Prefix = $"/t{Guid.NewGuid():N}/";
        for (int i = 0; i < count; i++)
            _hosts.Add(new GuestHost(new HostOptions
            {
                Log = Log, Fault = fault, GoQueryInterval = TimeSpan.FromMilliseconds(100),
                Ownership = FleetMember.Join(new FleetOptions { Endpoints = etcd.Endpoints.Split(','), Prefix = Prefix, LeaseTtl = TimeSpan.FromSeconds(leaseTtl), CapacityBytes = 1UL << 30 }),
                SwitchoverCommit = host => new OwnershipCommit(host),
            }));
        Admin = new FleetAdmin(etcd.Endpoints, Prefix);
    }

    public EtcdCluster Etcd { get; }
    public string Prefix { get; }
    public FleetAdmin Admin { get; }
    public GuestHost this[int i] => _hosts[i];
    public GuestHost A => _hosts[0];
    public GuestHost B => _hosts[1];
    public FleetMember Member(int i) => (FleetMember)_hosts[i].Ownership;

    private readonly List<string> _log = [];

    public void Log(string s)
    {
        lock (_log) _log.Add(s);
        try { _output.WriteLine(s); } catch (InvalidOperationException) { }
    }

    public bool Logged(string text) { lock (_log) return _log.Any(l => l.Contains(text)); }

    public void WaitLogged(string text, int timeoutMs = 20000) => Fleet.Wait(() => Logged(text), timeoutMs, $"'{text}' in the hosts' log");

    public int RunningCount(string name) => _hosts.Count(h => h.FindInstance(name) is { State: GuestStatus.Running or GuestStatus.Paused or GuestStatus.Pausing or GuestStatus.Fenced });

    public MigrationReport Migrate(string name, GuestHost from, GuestHost to, string strategy = "log")
    {
        using var c = HostClient.Connect(from.Address);
        var r = c.Migrate(new MigrateCommand { Name = name, Target = to.Address, Strategy = LiveMigration.Migration.Engine.Strategies.Parse(strategy) });
        Log($"report: success={r.Success} error='{r.Error}' downtime={r.DowntimeSeconds * 1000:F2} ms digest={r.Digest:x16}");
        return r;
    }

    public void Dispose()
    {
        foreach (var h in _hosts) h.Dispose();
        Admin.Dispose();
    }
}
