namespace LiveMigration.Migration.Transport.Tls;

/// <summary>
/// What a certificate lets its holder do. The role travels in the certificate's subject as an
/// organizational unit (<c>OU=lm-host</c>, <c>OU=lm-operator</c>, <c>OU=lm-viewer</c>), issued only
/// by the fleet's CA; <see cref="Hosting.Authorization"/> maps roles to requests.
/// Wire-stable names: never renumber.
/// </summary>
public enum Role
{
    /// <summary>May read status and reports (and, later, the dashboard).</summary>
    Viewer = 1,
    /// <summary>May start, stop, migrate, cancel, resolve and attach consoles, and read everything a viewer reads.</summary>
    Operator = 2,
    /// <summary>Another host of the fleet: sends and receives migrations, serves post-copy pages, answers GO queries.</summary>
    Host = 3,
}

/// <summary>Who is on the other end of a connection, as its certificate proves (or plaintext loopback).</summary>
public sealed record PeerIdentity(Role? Role, string Name, bool Authenticated)
{
    /// <summary>
    /// A plaintext connection to a host without TLS. Such a host listens on loopback only, and there
    /// every local process is trusted with every role (the documented no-TLS mode).
    /// </summary>
    public static readonly PeerIdentity Loopback = new(null, "loopback (no TLS)", false);

    public override string ToString() => Authenticated ? $"{RoleNames.OrganizationalUnit(Role!.Value)} '{Name}'" : Name;
}

public static class RoleNames
{
    public static string OrganizationalUnit(Role role) => role switch
    {
        Role.Viewer => "lm-viewer",
        Role.Operator => "lm-operator",
        Role.Host => "lm-host",
        _ => throw new ArgumentOutOfRangeException(nameof(role)),
    };

    public static Role? FromOrganizationalUnit(string ou) => ou switch
    {
        "lm-viewer" => Role.Viewer,
        "lm-operator" => Role.Operator,
        "lm-host" => Role.Host,
        _ => null,
    };
}
