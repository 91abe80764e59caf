using LiveMigration.Migration.Hosting;

namespace LiveMigration.Operator.Tests;

/// <summary>Two hosts in this process, each with a data directory and a dashboard; A shows B as its peer.</summary>
public sealed class TwoHosts : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("lm-operator-").FullName;

    public TwoHosts()
    {
        B = new GuestHost(new HostOptions { DataDir = Path.Combine(_root, "b") });
        A = new GuestHost(new HostOptions { DataDir = Path.Combine(_root, "a") });
        DashboardB = new OperatorServer(B, new OperatorOptions { Peers = [A.Address] });
        DashboardA = new OperatorServer(A, new OperatorOptions { Peers = [B.Address] });
    }

    public GuestHost A { get; }
    public GuestHost B { get; }
    public OperatorServer DashboardA { get; }
    public OperatorServer DashboardB { get; }

    public void Dispose()
    {
        DashboardA.Dispose();
        DashboardB.Dispose();
        A.Dispose();
        B.Dispose();
        try { Directory.Delete(_root, recursive: true); } catch (IOException) { }
    }
}
