using System.Net;
using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace LiveMigration.Migration.Transport.Tls;

/// <summary>
/// One holder's TLS credentials, loaded from a TLS directory (see <see cref="CertificateAuthority"/>):
/// the fleet CA, pinned as the only trust anchor, and the holder's certificate and key. Every
/// connection it makes or accepts is mutual TLS 1.3; a peer's certificate must chain to that CA
/// (the system's trust store plays no part), carry the key usage its side needs and name a role.
/// </summary>
public sealed class TlsIdentity : IDisposable
{
    private TlsIdentity(X509Certificate2 ca, X509Certificate2 certificate, Role role, string name, string directory)
    {
        Ca = ca;
        Certificate = certificate;
        Role = role;
        Name = name;
        Directory = directory;
    }

    public X509Certificate2 Ca { get; }
    public X509Certificate2 Certificate { get; }
    public Role Role { get; }
    public string Name { get; }
    public string Directory { get; }

    /// <summary>Loads ca.crt, cert.pem and key.pem from <paramref name="dir"/>; a one-line IOException when they are missing or do not match.</summary>
    public static TlsIdentity Load(string dir)
    {
        string ca = Path.Combine(dir, CertificateAuthority.CaCertFile), cert = Path.Combine(dir, CertificateAuthority.CertFile), key = Path.Combine(dir, CertificateAuthority.KeyFile);
        foreach (var f in new[] { ca, cert, key })
            if (!File.Exists(f)) throw new IOException($"TLS directory {dir} lacks {Path.GetFileName(f)} (make one with `lm certs init` / `lm certs issue`)");
        X509Certificate2 caCert, own;
        try
        {
            caCert = X509CertificateLoader.LoadCertificateFromFile(ca);
            // Through PKCS#12 so the key is a persisted one SslStream can use as a server on every platform.
            using var pem = X509Certificate2.CreateFromPemFile(cert, key);
            own = X509CertificateLoader.LoadPkcs12(pem.Export(X509ContentType.Pkcs12), null);
        }
        catch (CryptographicException e) { throw new IOException($"TLS directory {dir}: {e.Message}", e); }
        var check = TlsPolicy.Check(own, caCert, TlsPolicy.ClientAuth);
        if (check.Identity == null) throw new IOException($"TLS directory {dir}: its certificate is not valid for this fleet's CA: {check.Error}");
        return new TlsIdentity(caCert, own, check.Identity.Role!.Value, check.Identity.Name, dir);
    }

    /// <summary>
    /// Server side of the TLS handshake, with no thread waiting on the client; returns the stream and
    /// the client's proven identity. A client that does not complete it within <paramref name="timeout"/> is refused.
    /// </summary>
    public async ValueTask<(SslStream Stream, PeerIdentity Peer)> AuthenticateAsServerAsync(Stream inner, TimeSpan timeout, CancellationToken cancel)
    {
        PeerIdentity? peer = null;
        string? error = null;
        var ssl = new SslStream(new ReadAheadStream(inner), leaveInnerStreamOpen: false);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        deadline.CancelAfter(timeout);
        try
        {
            await ssl.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
            {
                ServerCertificate = Certificate,
                ClientCertificateRequired = true,
                EnabledSslProtocols = SslProtocols.Tls13,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                RemoteCertificateValidationCallback = (_, cert, _, _) =>
                {
                    var r = TlsPolicy.Check(cert, Ca, TlsPolicy.ClientAuth);
                    (peer, error) = (r.Identity, r.Error);
                    return r.Identity != null;
                },
            }, deadline.Token);
        }
        catch (OperationCanceledException e) when (!cancel.IsCancellationRequested)
        {
            await ssl.DisposeAsync();
            throw new TlsRefusedException($"the TLS handshake did not complete within {timeout.TotalSeconds:0.#} s", e);
        }
        catch (Exception e) when (e is AuthenticationException or IOException or System.ComponentModel.Win32Exception)
        {
            await ssl.DisposeAsync();
            throw new TlsRefusedException(error ?? $"TLS handshake failed (a plaintext or non-TLS-1.3 client, or no certificate): {e.Message}", e);
        }
        return (ssl, peer ?? throw new TlsRefusedException("the client presented no certificate"));
    }

    /// <summary>Client side: the server must present a host certificate of this fleet whose SAN names <paramref name="targetHost"/>.</summary>
    public (SslStream Stream, PeerIdentity Peer) AuthenticateAsClient(Stream inner, string targetHost)
    {
        PeerIdentity? peer = null;
        string? error = null;
        var ssl = new SslStream(new ReadAheadStream(inner), leaveInnerStreamOpen: false);
        try
        {
            ssl.AuthenticateAsClient(new SslClientAuthenticationOptions
            {
                TargetHost = IPAddress.TryParse(targetHost, out _) ? "" : targetHost,
                EnabledSslProtocols = SslProtocols.Tls13,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                LocalCertificateSelectionCallback = (_, _, _, _, _) => Certificate,
                RemoteCertificateValidationCallback = (_, cert, _, _) =>
                {
                    var r = TlsPolicy.Check(cert, Ca, TlsPolicy.ServerAuth);
                    if (r.Identity != null && r.Identity.Role != Role.Host) r = new(null, $"the server's certificate is a {r.Identity}, not a host's");
                    if (r.Identity != null && !TlsPolicy.Names(cert!, targetHost)) r = new(null, $"the server's certificate ({r.Identity}) is not issued for {targetHost}");
                    (peer, error) = (r.Identity, r.Error);
                    return r.Identity != null;
                },
            });
        }
        catch (Exception e) when (e is AuthenticationException or IOException or System.ComponentModel.Win32Exception)
        {
            ssl.Dispose();
            throw new TlsRefusedException(error != null ? $"refused the server: {error}" : $"TLS handshake failed: {e.Message} (is the host running with --tls and this fleet's CA?)", e);
        }
        return (ssl, peer!);
    }

    public void Dispose()
    {
        Ca.Dispose();
        Certificate.Dispose();
    }
}

/// <summary>The checks on a peer's certificate, in one place.</summary>
public static class TlsPolicy
{
    public static readonly Oid ServerAuth = new("1.3.6.1.5.5.7.3.1", "Server Authentication");
    public static readonly Oid ClientAuth = new("1.3.6.1.5.5.7.3.2", "Client Authentication");

    public readonly record struct Result(PeerIdentity? Identity, string? Error);

    /// <summary>Chains <paramref name="certificate"/> to <paramref name="ca"/> alone and reads its role; requires <paramref name="usage"/>.</summary>
    public static Result Check(X509Certificate? certificate, X509Certificate2 ca, Oid usage)
    {
        if (certificate == null) return new(null, "no certificate presented");
        using var cert = certificate as X509Certificate2 is { } c2 ? X509CertificateLoader.LoadCertificate(c2.RawData) : X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(ca);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.DisableCertificateDownloads = true;
        if (!chain.Build(cert))
        {
            var status = string.Join(", ", chain.ChainStatus.Select(s => s.Status.ToString()).Distinct());
            return new(null, $"certificate '{cert.Subject}' does not chain to this fleet's CA ({status})");
        }
        var root = chain.ChainElements[^1].Certificate;
        if (!root.RawDataMemory.Span.SequenceEqual(ca.RawDataMemory.Span)) return new(null, $"certificate '{cert.Subject}' chains to another root");
        var eku = cert.Extensions.OfType<X509EnhancedKeyUsageExtension>().FirstOrDefault();
        if (eku == null || !eku.EnhancedKeyUsages.Cast<Oid>().Any(o => o.Value == usage.Value))
            return new(null, $"certificate '{cert.Subject}' is not for {usage.FriendlyName}");
        Role? role = null;
        string? name = null;
        foreach (var rdn in cert.SubjectName.EnumerateRelativeDistinguishedNames())
        {
            string? oid = rdn.GetSingleElementType().Value;
            if (oid == "2.5.4.11") role ??= RoleNames.FromOrganizationalUnit(rdn.GetSingleElementValue() ?? "");
            else if (oid == "2.5.4.3") name = rdn.GetSingleElementValue();
        }
        if (role == null) return new(null, $"certificate '{cert.Subject}' names no LiveMigration role (OU=lm-host, lm-operator or lm-viewer)");
        if (Protocol.Names.Problem(name, "certificate name") is { } why) return new(null, why);
        return new(new PeerIdentity(role, name!, true), null);
    }

    /// <summary>True when the certificate's SAN names <paramref name="host"/> (an IP address or a DNS name).</summary>
    public static bool Names(X509Certificate certificate, string host)
    {
        using var cert = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        var san = cert.Extensions.OfType<X509SubjectAlternativeNameExtension>().FirstOrDefault();
        if (san == null) return false;
        if (IPAddress.TryParse(host, out var ip)) return san.EnumerateIPAddresses().Any(a => a.Equals(ip));
        return san.EnumerateDnsNames().Any(d => string.Equals(d, host, StringComparison.OrdinalIgnoreCase));
    }
}

/// <summary>The TLS handshake failed or the peer's certificate was refused; the message says why.</summary>
public sealed class TlsRefusedException(string message, Exception? inner = null) : IOException(message, inner);
