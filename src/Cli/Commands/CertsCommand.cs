using System.CommandLine;
using System.Net;
using LiveMigration.Migration.Transport.Tls;

namespace LiveMigration.Cli.Commands;

/// <summary>`lm certs init` and `lm certs issue`: the fleet's CA and its certificates, without openssl.</summary>
public static class CertsCommand
{
    public static Command Create()
    {
        var command = new Command("certs", "Make the fleet's CA and issue host, operator and viewer certificates");
        command.Subcommands.Add(Init());
        command.Subcommands.Add(Issue());
        return command;
    }

    private static Command Init()
    {
        var dir = new Option<string>("--dir") { Description = "directory for the CA (ca.crt, ca.key) and the first operator identity (cert.pem, key.pem)", Required = true };
        var op = new Option<string>("--operator") { Description = "name of the operator certificate", DefaultValueFactory = _ => "operator" };
        var command = new Command("init", "Make a CA and an operator certificate in DIR (then: lm status --tls DIR ...)");
        command.Options.Add(dir);
        command.Options.Add(op);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            string d = parse.GetValue(dir)!;
            CertificateAuthority.Init(d, parse.GetValue(op)!);
            Console.WriteLine($"made the fleet CA in {d} (keep {Path.Combine(d, CertificateAuthority.CaKeyFile)} secret) and operator '{parse.GetValue(op)}' ({Path.Combine(d, CertificateAuthority.CertFile)}); use --tls {d}");
            return 0;
        }));
        return command;
    }

    private static Command Issue()
    {
        var dir = new Option<string>("--dir") { Description = "the CA's directory (from lm certs init)", Required = true };
        var host = new Option<string?>("--host") { Description = "issue a host certificate NAME (serves clients, sends and receives migrations)" };
        var address = new Option<string[]>("--address") { Description = "the host's IP address(es), put in its certificate's SAN (clients check it)", AllowMultipleArgumentsPerToken = true };
        var op = new Option<string?>("--operator") { Description = "issue an operator certificate NAME (start, stop, migrate, cancel, resolve, console)" };
        var viewer = new Option<string?>("--viewer") { Description = "issue a viewer certificate NAME (status and reports only)" };
        var command = new Command("issue", "Issue a certificate into DIR/NAME (ca.crt, cert.pem, key.pem): hand that directory to its holder");
        foreach (var o in new Option[] { dir, host, address, op, viewer }) command.Options.Add(o);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var chosen = new (Role Role, string? Name)[] { (Role.Host, parse.GetValue(host)), (Role.Operator, parse.GetValue(op)), (Role.Viewer, parse.GetValue(viewer)) }
                .Where(c => c.Name != null).ToArray();
            if (chosen.Length != 1) throw new FormatException("name exactly one of --host NAME, --operator NAME, --viewer NAME");
            var (role, name) = chosen[0];
            var addresses = (parse.GetValue(address) ?? []).Select(a => IPAddress.TryParse(a, out var ip) ? ip : throw new FormatException($"--address '{a}' is not an IP address")).ToList();
            if (addresses.Count > 0 && role != Role.Host) throw new FormatException("--address belongs to a --host certificate");
            string outDir = CertificateAuthority.Issue(parse.GetValue(dir)!, role, name!, addresses);
            string where = role == Role.Host ? $" for {string.Join(", ", addresses.Select(a => a.ToString()).Prepend(name!))}" : "";
            Console.WriteLine($"issued {RoleNames.OrganizationalUnit(role)} certificate '{name}'{where} in {outDir}; use --tls {outDir}");
            return 0;
        }));
        return command;
    }
}
