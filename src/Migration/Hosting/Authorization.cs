using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport.Tls;
using static LiveMigration.Migration.Protocol.Envelope;

namespace LiveMigration.Migration.Hosting;

/// <summary>Everything a peer may ask of a host; each is granted to roles in <see cref="Authorization"/>.</summary>
public enum Request
{
    Status = 1,
    /// <summary>Migration reports (the dashboard's history).</summary>
    Reports = 2,
    StartGuest = 3,
    StopGuest = 4,
    Migrate = 5,
    Cancel = 6,
    Resolve = 7,
    Console = 8,
    /// <summary>A migration stream: send or receive a guest, serve or fetch its post-copy pages.</summary>
    MigrationStream = 9,
    /// <summary>A destination that lost GO asks its source for the decision.</summary>
    GoQuery = 10,
}

/// <summary>
/// The one table of who may do what, checked in one place per connection kind (the handshake, each
/// control request, a console attach). Plaintext is only possible on loopback (a host without TLS
/// binds nothing else), and there every local process holds every role.
/// </summary>
public static class Authorization
{
    private static readonly Dictionary<Role, Request[]> Grants = new()
    {
        [Role.Viewer] = [Request.Status, Request.Reports],
        [Role.Operator] = [Request.Status, Request.Reports, Request.StartGuest, Request.StopGuest, Request.Migrate, Request.Cancel, Request.Resolve, Request.Console],
        [Role.Host] = [Request.MigrationStream, Request.GoQuery],
    };

    public static bool Allows(PeerIdentity peer, Request request) =>
        !peer.Authenticated || (peer.Role is { } role && Grants[role].Contains(request));

    /// <summary>Null when allowed, else the one-line refusal sent to the peer.</summary>
    public static string? Denial(PeerIdentity peer, Request request) =>
        Allows(peer, request) ? null : $"{peer} may not {Describe(request)} (that needs a certificate of role {string.Join(" or ", RolesFor(request).Select(RoleNames.OrganizationalUnit))})";

    public static IEnumerable<Role> RolesFor(Request request) => Grants.Where(g => g.Value.Contains(request)).Select(g => g.Key);

    /// <summary>A connection's purpose, decided at the handshake: a migration stream needs a host's certificate.</summary>
    public static string? Denial(PeerIdentity peer, Purpose purpose) => purpose switch
    {
        Purpose.Migrate => Denial(peer, Request.MigrationStream),
        _ => null, // control: each request is checked as it comes
    };

    /// <summary>The request a control message makes, or null for a message that is not a control request.</summary>
    public static Request? For(BodyOneofCase message) => message switch
    {
        BodyOneofCase.StatusRequest => Request.Status,
        BodyOneofCase.StartGuest => Request.StartGuest,
        BodyOneofCase.StopGuest => Request.StopGuest,
        BodyOneofCase.MigrateCommand => Request.Migrate,
        BodyOneofCase.Cancel => Request.Cancel,
        BodyOneofCase.Resolve => Request.Resolve,
        BodyOneofCase.GoQuery => Request.GoQuery,
        BodyOneofCase.ArrivalQuery => Request.GoQuery, // a source holding a paused copy asks how its GO ended
        _ => null,
    };

    private static string Describe(Request r) => r switch
    {
        Request.Status => "read status",
        Request.Reports => "read reports",
        Request.StartGuest => "start guests",
        Request.StopGuest => "stop guests",
        Request.Migrate => "migrate guests",
        Request.Cancel => "cancel migrations",
        Request.Resolve => "resolve migrations",
        Request.Console => "attach to consoles",
        Request.MigrationStream => "send or receive migrations",
        Request.GoQuery => "ask for a migration's GO or its arrival",
        _ => r.ToString(),
    };
}
