using System.CommandLine;
using System.Diagnostics;
using LiveMigration.Guest;
using LiveMigration.Guest.Loader;
using LiveMigration.Recorder;
using LiveMigration.Recorder.Serial;

namespace LiveMigration.Cli.Commands;

/// <summary>`lm run GUEST.elf`: runs a guest live, its UART on stdout/stdin (or a TCP port).</summary>
public static class RunCommand
{
    public const int InstructionLimitExit = 124;
    public const int IdleExit = 3;
    public const int InterruptedExit = 130;

    public static Command Create()
    {
        var guest = new Argument<FileInfo>("guest") { Description = "RISC-V ELF64 executable to run" };
        var mem = new Option<string>("--mem") { Description = "guest RAM size (e.g. 128M, 1G)", DefaultValueFactory = _ => "128M" };
        var maxInstructions = new Option<ulong?>("--max-instructions") { Description = "stop with exit code 124 after N instructions" };
        var serial = new Option<string>("--serial") { Description = "where the UART goes: stdio, or tcp:HOST:PORT (listens, waits for one client)", DefaultValueFactory = _ => "stdio" };
        var stats = new Option<bool>("--stats") { Description = "print instructions, seconds and guest MIPS to stderr at exit" };

        var command = new Command("run", "Run a guest program");
        command.Arguments.Add(guest);
        command.Options.Add(mem);
        command.Options.Add(maxInstructions);
        command.Options.Add(serial);
        command.Options.Add(stats);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var config = new MachineConfig { MemorySize = MachineConfig.ParseSize(parse.GetValue(mem)!) };
            using var backend = OpenSerial(parse.GetValue(serial)!);
            return RunGuest(parse.GetValue(guest)!.FullName, config, backend, parse.GetValue(maxInstructions), parse.GetValue(stats));
        }));
        return command;
    }

    public static ISerialBackend OpenSerial(string spec)
    {
        if (spec == "stdio") return new StreamSerialBackend(Console.OpenStandardInput(), Console.OpenStandardOutput());
        if (spec.StartsWith("tcp:", StringComparison.Ordinal))
        {
            int colon = spec.LastIndexOf(':');
            string host = spec[4..colon];
            if (colon <= 3 || !int.TryParse(spec[(colon + 1)..], out int port))
                throw new FormatException($"--serial {spec}: expected tcp:HOST:PORT");
            return TcpSerialBackend.Listen(host, port, ep => Console.Error.WriteLine($"lm: serial waiting for a client on tcp:{ep}"));
        }
        throw new FormatException($"--serial {spec}: expected stdio or tcp:HOST:PORT");
    }

    private static int RunGuest(string path, MachineConfig config, ISerialBackend backend, ulong? maxInstructions, bool stats)
    {
        var port = new LiveHostPort(backend);
        using var machine = new Machine(config, port);
        ElfLoader.LoadFile(machine, path);

        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; machine.RequestStop(); };
        Console.CancelKeyPress += onCancel;
        var clock = Stopwatch.StartNew();
        var reason = machine.Run(maxInstructions ?? ulong.MaxValue);
        clock.Stop();
        Console.CancelKeyPress -= onCancel;
        backend.Flush();

        if (stats)
        {
            double seconds = clock.Elapsed.TotalSeconds;
            Console.Error.WriteLine($"lm: instructions {machine.Icount}, seconds {seconds:F3}, guest MIPS {machine.Icount / seconds / 1e6:F1}");
        }
        switch (reason)
        {
            case StopReason.Exited: return machine.ExitCode!.Value;
            case StopReason.InstructionLimit:
                Console.Error.WriteLine($"lm: instruction limit reached at icount {machine.Icount}");
                return InstructionLimitExit;
            case StopReason.Idle:
                Console.Error.WriteLine($"lm: guest waits in WFI at pc 0x{machine.Pc:x} with no interrupt source left (input closed)");
                return IdleExit;
            default:
                Console.Error.WriteLine($"lm: interrupted at icount {machine.Icount}");
                return InterruptedExit;
        }
    }
}
