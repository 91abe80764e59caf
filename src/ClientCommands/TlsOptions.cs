using System.CommandLine;
using LiveMigration.Migration.Transport.Tls;

namespace LiveMigration.Cli.Commands;

/// <summary>`--tls DIR` (or LM_TLS_DIR) on every command that talks to a host.</summary>
public static class TlsOptions
{
    public const string EnvironmentVariable = "LM_TLS_DIR";

    public static Option<string?> Create(string description = "TLS directory (ca.crt, cert.pem, key.pem from `lm certs`); default $LM_TLS_DIR; without it, plaintext to a loopback host") =>
        new("--tls") { Description = description };

    /// <summary>The identity to connect as: --tls, else $LM_TLS_DIR, else none (plaintext).</summary>
    public static TlsIdentity? Load(ParseResult parse, Option<string?> option)
    {
        string? dir = parse.GetValue(option);
        if (string.IsNullOrEmpty(dir)) dir = Environment.GetEnvironmentVariable(EnvironmentVariable);
        return string.IsNullOrEmpty(dir) ? null : TlsIdentity.Load(dir);
    }
}
