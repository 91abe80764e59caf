using LiveMigration.Operator.Access;

namespace LiveMigration.Operator;

public sealed record OperatorOptions
{
    /// <summary>HOST:PORT of the HTTP listener; loopback only until the TLS roles exist. Port 0 picks one.</summary>
    public string Http { get; init; } = "127.0.0.1:0";
    /// <summary>Control addresses (HOST:PORT) of other hosts to show beside this one (until the fleet knows them).</summary>
    public IReadOnlyList<string> Peers { get; init; } = [];
    /// <summary>Who may start, migrate and cancel.</summary>
    public IControlAuthorizer Authorizer { get; init; } = new LoopbackOnly();
}
