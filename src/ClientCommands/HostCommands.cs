using System.CommandLine;
using System.Net.Sockets;
using Google.Protobuf;
using LiveMigration.Guest;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
using Spectre.Console;

namespace LiveMigration.Cli.Commands;

/// <summary>`lm start`, `lm status`, `lm stop`, `lm console`, `lm resolve` (`lm host` is the full CLI's: <c>HostCommand</c>).</summary>
public static class HostCommands
{
    private static Option<string> HostOption(bool required = true) => new("--host")
    {
        Description = "address of the host (HOST:PORT)",
        Required = required,
    };

    /// <summary>Adds --tls to a client command and returns how to connect with it.</summary>
    internal static Func<ParseResult, string, HostClient> Client(Command command)
    {
        var tls = TlsOptions.Create();
        command.Options.Add(tls);
        return (parse, address) => HostClient.Connect(address, TlsOptions.Load(parse, tls));
    }

    public static Command Start()
    {
        var host = HostOption();
        var guest = new Argument<FileInfo?>("guest") { Description = "RISC-V ELF64 executable (omit with --kernel)", Arity = ArgumentArity.ZeroOrOne };
        var name = new Option<string>("--name") { Description = "name of the guest on the host", Required = true };
        var mem = new Option<string>("--mem") { Description = "guest RAM size (e.g. 128M)", DefaultValueFactory = _ => "128M" };
        var boot = new KernelBootOptions();
        var drive = MachineOptions.Drive();
        drive.Description = "a raw disk image ON THE HOST for virtio-blk (its path there; it moves with the guest: see lm migrate --disk-path, --disk-base, --shared-disk)";
        var command = new Command("start", "Start a guest on a host (the ELF is sent to the host)");
        command.Options.Add(host);
        command.Arguments.Add(guest);
        command.Options.Add(name);
        command.Options.Add(mem);
        command.Options.Add(drive);
        boot.AddTo(command);
        var connect = Client(command);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var file = parse.GetValue(guest);
            Names.Check(parse.GetValue(name));
            ulong size = MachineConfig.ParseSize(parse.GetValue(mem)!);
            var kernel = boot.Read(parse);
            if ((file == null) == (kernel == null)) throw new FormatException("give one of: a guest ELF, --kernel Image");
            var elf = file == null ? null : File.ReadAllBytes(file.FullName);
            var driveSpec = parse.GetValue(drive) is { } d ? Recorder.Disk.DriveSpec.Parse(d) : null;
            using var c = connect(parse, parse.GetValue(host)!);
            string console = kernel != null
                ? c.Start(parse.GetValue(name)!, kernel, size, Path.GetFileName(parse.GetValue(boot.Kernel)!.Name), driveSpec)
                : c.Start(parse.GetValue(name)!, elf!, size, Path.GetFileNameWithoutExtension(file!.Name), driveSpec);
            Console.WriteLine($"started '{parse.GetValue(name)}' on {parse.GetValue(host)}; console tcp:{console}");
            return 0;
        }));
        return command;
    }

    public static Command Status()
    {
        var host = HostOption(required: false);
        var etcd = EtcdOptions.Etcd();
        var prefix = EtcdOptions.Prefix();
        var name = new Argument<string?>("name") { Description = "only this guest", Arity = ArgumentArity.ZeroOrOne };
        var json = new Option<bool>("--json") { Description = "print JSON" };
        var command = new Command("status", "Show the guests of a host (with --etcd, find guest NAME wherever it runs)");
        command.Options.Add(host);
        command.Arguments.Add(name);
        command.Options.Add(json);
        var connect = Client(command);
        command.Options.Add(etcd);
        command.Options.Add(prefix);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            string? at = parse.GetValue(host);
            if (at == null && parse.GetValue(etcd) is { } fleet && parse.GetValue(name) is { } guest)
            {
                at = EtcdOptions.Locate(fleet, parse.GetValue(prefix)!, guest);
                if (!parse.GetValue(json)) Console.WriteLine($"'{guest}' belongs to {at}");
            }
            using var c = connect(parse, at ?? throw new FormatException("--host HOST:PORT is required (or --etcd URL with a guest NAME)"));
            var reply = c.Status(parse.GetValue(name));
            if (parse.GetValue(json))
            {
                Console.WriteLine(new JsonFormatter(JsonFormatter.Settings.Default.WithFormatDefaultValues(true)).Format(reply));
                return 0;
            }
            var table = new Table().AddColumns("name", "state", "icount", "memory", "console", "image", "note");
            foreach (var g in reply.Guests)
                table.AddRow(Markup.Escape(g.Name), g.State, g.Icount.ToString("N0"), g.MemorySize > 0 ? $"{g.MemorySize >> 20} MiB" : "",
                    g.Console, Markup.Escape(g.ImageName),
                    Markup.Escape(g.MovedTo != "" ? $"moved to {g.MovedTo}{(g.Migration != "" ? $"; {g.Migration}" : "")}" : g.HasExitCode ? $"exit code {g.ExitCode}" : g.Migration != "" ? $"migration: {g.Migration}" : ""));
            if (reply.Guests.Count == 0) Console.WriteLine("no guests");
            else AnsiConsole.Write(table);
            return 0;
        }));
        return command;
    }

    public static Command Stop()
    {
        var host = HostOption();
        var name = new Argument<string>("name") { Description = "guest to stop" };
        var command = new Command("stop", "Stop a guest and forget it");
        command.Options.Add(host);
        command.Arguments.Add(name);
        var connect = Client(command);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            using var c = connect(parse, parse.GetValue(host)!);
            Console.WriteLine(c.Stop(parse.GetValue(name)!));
            return 0;
        }));
        return command;
    }

    public static Command Resolve()
    {
        var host = HostOption();
        var name = new Argument<string>("name") { Description = "guest whose incoming migration awaits GO" };
        var decision = new Option<string>("--decision") { Description = "ask (default: ask the source), go (only when the source is gone for good) or abort", DefaultValueFactory = _ => "ask" };
        var command = new Command("resolve", "Settle a migration whose GO was lost: ask the source again, or decide when the source is gone");
        command.Options.Add(host);
        command.Arguments.Add(name);
        command.Options.Add(decision);
        var connect = Client(command);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            using var c = connect(parse, parse.GetValue(host)!);
            string d = parse.GetValue(decision)!;
            Console.WriteLine(c.Resolve(parse.GetValue(name)!, d == "ask" ? "" : d));
            return 0;
        }));
        return command;
    }

    public static Command ConsoleCommand()
    {
        var host = HostOption();
        var name = new Argument<string>("name") { Description = "guest whose UART to attach" };
        var command = new Command("console", "Attach stdin/stdout to a guest's UART; follows the guest when it migrates");
        command.Options.Add(host);
        command.Arguments.Add(name);
        var tls = TlsOptions.Create();
        command.Options.Add(tls);
        command.SetAction(parse => CliErrors.Run(() => RunConsole(parse.GetValue(host)!, parse.GetValue(name)!, TlsOptions.Load(parse, tls))));
        return command;
    }

    private static int RunConsole(string startHost, string name, Migration.Transport.Tls.TlsIdentity? tls)
    {
        string at = startHost;
        var stdout = Console.OpenStandardOutput();
        var stdin = Console.OpenStandardInput();
        var pending = new System.Collections.Concurrent.BlockingCollection<byte[]>();
        bool inputDone = false;
        var inputThread = new Thread(() =>
        {
            var buf = new byte[4096];
            int n;
            try { while ((n = stdin.Read(buf)) > 0) pending.Add(buf.AsSpan(0, n).ToArray()); }
            catch (IOException) { }
            inputDone = true;
            pending.Add([]);
        }) { IsBackground = true };
        inputThread.Start();

        while (true)
        {
            var (where, info) = HostClient.Locate(at, name, tls: tls);
            at = where;
            if (info.Status is not (GuestStatus.Running or GuestStatus.Exited or GuestStatus.Idle))
            {
                Thread.Sleep(50); // arriving or paused: the console is about to open
                continue;
            }
            var (h, p) = Address.Parse(info.Console);
            using var tcp = new TcpClient { NoDelay = true };
            tcp.Connect(h, p);
            Stream stream = tls == null ? tcp.GetStream() : tls.AuthenticateAsClient(tcp.GetStream(), h).Stream;
            Console.Error.WriteLine($"lm console: attached to '{name}' on {where} (tcp:{info.Console}{(tls != null ? ", TLS" : "")})");
            var closed = new ManualResetEventSlim();
            var reader = new Thread(() =>
            {
                var buf = new byte[4096];
                int n;
                try { while ((n = stream.Read(buf)) > 0) { stdout.Write(buf, 0, n); stdout.Flush(); } }
                catch (IOException) { }
                catch (ObjectDisposedException) { }
                closed.Set();
            }) { IsBackground = true };
            reader.Start();
            while (!closed.IsSet)
            {
                if (pending.TryTake(out var chunk, 50))
                {
                    if (chunk.Length == 0)
                    {
                        // stdin ended: give the guest a moment to answer, then leave.
                        closed.Wait(500);
                        return 0;
                    }
                    try { stream.Write(chunk); } catch (IOException) { pending.Add(chunk); break; }
                }
            }
            if (inputDone && pending.Count == 0) return 0;
            Console.Error.WriteLine($"lm console: '{name}' left {where}; following it");
            Thread.Sleep(20);
        }
    }
}
