using System.CommandLine;
using LiveMigration.Cli.Hosting;
using LiveMigration.Migration.Hosting;
using LiveMigration.Operator;

namespace LiveMigration.Cli.Commands;

/// <summary>`lm host`: the one host command, kept out of the AOT client (it runs guests, the JIT's job).</summary>
public static class HostCommand
{
    public static Command Create()
    {
        var listen = new Option<string>("--listen") { Description = "HOST:PORT to listen on", DefaultValueFactory = _ => "127.0.0.1:7070" };
        var data = new Option<string?>("--data") { Description = "directory for the host's log and journal of migration outcomes" };
        var diskDir = new Option<string?>("--disk-dir") { HelpName = "DIR", Description = "where incoming guests' disk images are kept (default: --data); a migration naming a disk path or base outside it is refused" };
        var quiet = new Option<bool>("--quiet") { Description = "do not log events to stderr" };
        var tls = TlsOptions.Create("TLS directory of this host's identity (from `lm certs issue --host NAME`): mutual TLS on every connection; required to listen beyond loopback");
        var defaults = new HostOptions();
        var maxConnections = new Option<int>("--max-connections") { Description = "connections served at once", DefaultValueFactory = _ => defaults.MaxConnections };
        var handshake = new Option<double>("--handshake-timeout") { Description = "seconds for a new connection's TLS handshake and Hello", DefaultValueFactory = _ => defaults.HandshakeTimeout.TotalSeconds };
        var read = new Option<double>("--read-timeout") { Description = "seconds for a frame's payload to arrive once its header did", DefaultValueFactory = _ => defaults.ReadTimeout.TotalSeconds };
        var idle = new Option<double>("--idle-timeout") { Description = "seconds a control connection may stay silent", DefaultValueFactory = _ => defaults.IdleTimeout.TotalSeconds };
        var maxGuests = new Option<int>("--max-guests") { Description = "guests running or arriving at once", DefaultValueFactory = _ => defaults.MaxGuests };
        var memFraction = new Option<double>("--max-memory-fraction") { Description = "all guests' RAM stays below this fraction of the host's memory", DefaultValueFactory = _ => defaults.MaxMemoryFraction };
        var maxIncoming = new Option<int>("--max-incoming") { Description = "incoming migrations at once", DefaultValueFactory = _ => defaults.MaxIncomingMigrations };
        var command = new Command("host", "Run a host: runs guests and accepts migrations and control commands");
        var http = new Option<string?>("--http") { Description = "serve the dashboard, JSON API and /metrics on HOST:PORT (loopback only for now)" };
        var peers = new Option<string[]>("--peer") { Description = "another host's HOST:PORT to show on the dashboard (repeatable)", AllowMultipleArgumentsPerToken = false };
        foreach (var o in new Option[] { listen, data, diskDir, quiet, http, peers, tls, maxConnections, handshake, read, idle, maxGuests, memFraction, maxIncoming }) command.Options.Add(o);
        var fleet = HostFleetOptions.Add(command);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            bool q = parse.GetValue(quiet);
            static TimeSpan Seconds(double s, string flag) => s > 0 && s < 86400 ? TimeSpan.FromSeconds(s) : throw new FormatException($"{flag} takes seconds between 0 and 86400");
            static int Positive(int n, string flag) => n > 0 ? n : throw new FormatException($"{flag} must be at least 1");
            double fraction = parse.GetValue(memFraction);
            if (fraction is <= 0 or > 1) throw new FormatException("--max-memory-fraction is a fraction in (0, 1]");
            using var identity = TlsOptions.Load(parse, tls);
            if (identity != null && identity.Role != Migration.Transport.Tls.Role.Host)
                throw new FormatException($"--tls {identity.Directory} holds a {identity.Role} certificate; a host needs one from `lm certs issue --host NAME`");
            using var host = new GuestHost(fleet.Apply(parse, new HostOptions
            {
                Listen = parse.GetValue(listen)!,
                DataDir = parse.GetValue(data),
                DiskDir = parse.GetValue(diskDir) is { } dd ? Path.GetFullPath(dd) : null,
                Log = q ? null : m => Console.Error.WriteLine($"{DateTime.Now:HH:mm:ss.fff} {m}"),
                Tls = identity,
                MaxConnections = Positive(parse.GetValue(maxConnections), "--max-connections"),
                HandshakeTimeout = Seconds(parse.GetValue(handshake), "--handshake-timeout"),
                ReadTimeout = Seconds(parse.GetValue(read), "--read-timeout"),
                IdleTimeout = Seconds(parse.GetValue(idle), "--idle-timeout"),
                MaxGuests = Positive(parse.GetValue(maxGuests), "--max-guests"),
                MaxMemoryFraction = fraction,
                MaxIncomingMigrations = Positive(parse.GetValue(maxIncoming), "--max-incoming"),
            }));
            Console.WriteLine($"lm host listening on {host.Address}{(identity == null ? " (no TLS: loopback only)" : $" (mutual TLS as '{identity.Name}')")}");
            using var dashboard = parse.GetValue(http) is { } httpAddress
                ? new OperatorServer(host, new OperatorOptions { Http = httpAddress, Peers = parse.GetValue(peers) ?? [] })
                : null;
            if (dashboard != null) Console.WriteLine($"lm host dashboard on {dashboard.Url}");
            if (host.Reports.Folder != null) Console.WriteLine($"lm host keeps migration reports in {host.Reports.Folder}");
            // In the background: the host serves at once; its first migration finds the paths warm.
            new Thread(() => MigrationWarmUp.Run(host.Options.Log)) { IsBackground = true, Name = "warm-up", Priority = ThreadPriority.BelowNormal }.Start();
            using var done = new ManualResetEventSlim();
            Console.CancelKeyPress += (_, e) => { e.Cancel = true; done.Set(); };
            // SIGTERM: a clean exit, so the host deregisters from the fleet before the process ends.
            using var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, c => { c.Cancel = true; done.Set(); });
            AppDomain.CurrentDomain.ProcessExit += (_, _) => done.Set();
            done.Wait();
            Console.Error.WriteLine("lm host: shutting down");
            return 0;
        }));
        return command;
    }
}
