using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Transport.Tls;

/// <summary>
/// `lm certs`: the fleet's CA and the certificates it issues, made with System.Security.Cryptography
/// alone (ECDSA P-256, SHA-256). A TLS directory holds <c>ca.crt</c> (the only trust anchor),
/// <c>cert.pem</c> and <c>key.pem</c> (its holder's identity). <c>init</c> writes the CA's key
/// (<c>ca.key</c>) and an operator identity into the same directory; <c>issue</c> writes a new
/// identity directory <c>DIR/NAME</c> to hand to its holder.
/// </summary>
public static class CertificateAuthority
{
    public const string CaCertFile = "ca.crt";
    public const string CaKeyFile = "ca.key";
    public const string CertFile = "cert.pem";
    public const string KeyFile = "key.pem";

    /// <summary>Makes a CA and an operator certificate named <paramref name="operatorName"/> in <paramref name="dir"/>.</summary>
    public static void Init(string dir, string operatorName = "operator", int validDays = 3650)
    {
        Names.Check(operatorName, "certificate name");
        if (File.Exists(Path.Combine(dir, CaKeyFile))) throw new IOException($"{Path.Combine(dir, CaKeyFile)} exists; refusing to replace the fleet's CA");
        Directory.CreateDirectory(dir);
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest("CN=lm fleet CA, O=LiveMigration", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, true, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        var now = DateTimeOffset.UtcNow;
        using var ca = request.CreateSelfSigned(now.AddMinutes(-5), now.AddDays(validDays));
        File.WriteAllText(Path.Combine(dir, CaCertFile), ca.ExportCertificatePem() + "\n");
        WriteSecret(Path.Combine(dir, CaKeyFile), key.ExportPkcs8PrivateKeyPem() + "\n");
        WriteIdentity(dir, ca, Role.Operator, operatorName, [], validDays); // a self-signed certificate carries its key already
    }

    /// <summary>Issues a certificate for <paramref name="role"/> into <c>dir/name</c>; returns that directory.</summary>
    public static string Issue(string dir, Role role, string name, IReadOnlyList<IPAddress> addresses, int validDays = 825)
    {
        Names.Check(name, "certificate name");
        using var ca = LoadCa(dir);
        string outDir = Path.Combine(dir, name);
        if (File.Exists(Path.Combine(outDir, KeyFile))) throw new IOException($"{outDir} already holds an identity; remove it first to reissue");
        Directory.CreateDirectory(outDir);
        File.Copy(Path.Combine(dir, CaCertFile), Path.Combine(outDir, CaCertFile), overwrite: true);
        WriteIdentity(outDir, ca, role, name, addresses, validDays);
        return outDir;
    }

    private static X509Certificate2 LoadCa(string dir)
    {
        string cert = Path.Combine(dir, CaCertFile), key = Path.Combine(dir, CaKeyFile);
        if (!File.Exists(cert) || !File.Exists(key)) throw new IOException($"{dir} holds no CA ({CaCertFile} and {CaKeyFile}); run `lm certs init --dir {dir}` first");
        return X509Certificate2.CreateFromPemFile(cert, key);
    }

    private static void WriteIdentity(string dir, X509Certificate2 ca, Role role, string name, IReadOnlyList<IPAddress> addresses, int validDays)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var subject = new X500DistinguishedNameBuilder();
        subject.AddOrganizationName("LiveMigration");
        subject.AddOrganizationalUnitName(RoleNames.OrganizationalUnit(role));
        subject.AddCommonName(name);
        var request = new CertificateRequest(subject.Build(), key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        // A host is a TLS server to clients and a TLS client to other hosts (it sends migrations).
        var usages = new OidCollection { TlsPolicy.ClientAuth };
        if (role == Role.Host) usages.Add(TlsPolicy.ServerAuth);
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension(usages, true));
        if (role == Role.Host)
        {
            var san = new SubjectAlternativeNameBuilder();
            san.AddDnsName(name);
            foreach (var a in addresses) san.AddIpAddress(a);
            request.CertificateExtensions.Add(san.Build(true));
        }
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        var now = DateTimeOffset.UtcNow;
        var notAfter = now.AddDays(validDays) < ca.NotAfter ? now.AddDays(validDays) : ca.NotAfter;
        using var cert = request.Create(ca, now.AddMinutes(-5), notAfter, RandomNumberGenerator.GetBytes(16));
        File.WriteAllText(Path.Combine(dir, CertFile), cert.ExportCertificatePem() + "\n");
        WriteSecret(Path.Combine(dir, KeyFile), key.ExportPkcs8PrivateKeyPem() + "\n");
    }

    private static void WriteSecret(string path, string text)
    {
        File.WriteAllText(path, "");
        if (!OperatingSystem.IsWindows()) File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.WriteAllText(path, text);
    }
}
