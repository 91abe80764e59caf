using System.Net;
using Microsoft.AspNetCore.Http;

namespace LiveMigration.Operator.Access;

/// <summary>What a dashboard or API request asks to change; reads need no permission beyond reaching the page.</summary>
public enum ControlAction
{
    StartGuest,
    Migrate,
    Cancel,
}

/// <summary>
/// The one decision every control endpoint asks for. The TLS issue's role check (operator may
/// control, viewer may only look) plugs in here as another implementation.
/// </summary>
public interface IControlAuthorizer
{
    /// <summary>Null when the request may do <paramref name="action"/>, else why not (sent back as the error).</summary>
    string? Deny(HttpContext request, ControlAction action);
}

/// <summary>Until roles exist: the listener binds loopback only, and controls come from this machine only.</summary>
public sealed class LoopbackOnly : IControlAuthorizer
{
    public string? Deny(HttpContext request, ControlAction action) =>
        request.Connection.RemoteIpAddress is { } ip && IPAddress.IsLoopback(ip)
            ? null
            : $"{action} is allowed from this machine only (loopback) until operator roles are configured";
}

/// <summary>
/// A host with mutual TLS: a browser brings no client certificate yet, so its dashboard shows and
/// does not control; control takes an operator certificate (`lm ... --tls DIR`). Without this, any
/// local process could drive through the page what the TLS listener refuses it.
/// </summary>
public sealed class ViewOnly : IControlAuthorizer
{
    public string? Deny(HttpContext request, ControlAction action) =>
        $"{action} needs an operator certificate on this host (it runs with mutual TLS): use `lm` with --tls DIR; the dashboard only shows";
}
