using System.CommandLine;
using System.Diagnostics;
using LiveMigration.Guest;
using LiveMigration.Guest.Loader;
using LiveMigration.Guest.Platform;
using LiveMigration.Recorder;
using LiveMigration.Recorder.Disk;
using LiveMigration.Recorder.Serial;
using LiveMigration.Trace;

namespace LiveMigration.Cli.Commands;

/// <summary>`lm run GUEST.elf` / `lm run --kernel Image [--initrd F] [--append C]` / `lm run --restore FILE`: runs a guest live, its UART on stdout/stdin (or a TCP port), optionally recording.</summary>
public static class RunCommand
{
    public const int InstructionLimitExit = 124;
    public const int IdleExit = 3;
    public const int InterruptedExit = 130;

    /// <summary>Everything a live run can be asked to do.</summary>
    public sealed record RunRequest
    {
        public string? GuestPath { get; init; }
        /// <summary>A kernel boot (firmware, Image, initrd, command line) instead of an ELF.</summary>
        public BootImages? Boot { get; init; }
        /// <summary>The kernel Image's path with <see cref="Boot"/> (names the trace's image).</summary>
        public string? KernelPath { get; init; }
        public string? RestorePath { get; init; }
        public MachineConfig Config { get; init; } = new();
        public ulong? MaxInstructions { get; init; }
        public bool Stats { get; init; }
        public string? RecordPath { get; init; }
        public ulong CheckpointEvery { get; init; }
        public ulong DigestEvery { get; init; } = new RecorderOptions().DigestInterval;
        public string? SaveCheckpointPath { get; init; }
        /// <summary>A raw image behind virtio-blk (`--drive FILE[,readonly]`).</summary>
        public DriveSpec? Drive { get; init; }
    }

    public static Command Create()
    {
        var guest = new Argument<FileInfo?>("guest") { Description = "RISC-V ELF64 executable to run (omit with --kernel or --restore)", Arity = ArgumentArity.ZeroOrOne };
        var kernel = new KernelBootOptions();
        var mem = new Option<string>("--mem") { HelpName = "SIZE", Description = "guest RAM size (e.g. 128M, 1G)", DefaultValueFactory = _ => "128M" };
        var maxInstructions = new Option<ulong?>("--max-instructions") { HelpName = "N", Description = "stop with exit code 124 after N instructions (the icount, counted from boot)" };
        var serial = new Option<string>("--serial") { HelpName = "SPEC", Description = "where the UART goes: stdio, or tcp:HOST:PORT (listens, waits for one client)", DefaultValueFactory = _ => "stdio" };
        var stats = new Option<bool>("--stats") { Description = "print instructions, seconds and guest MIPS to stderr at exit" };
        var record = new Option<FileInfo?>("--record") { HelpName = "FILE", Description = "record every input into this trace file (replay it with `lm replay`)" };
        var checkpointEvery = new Option<ulong>("--checkpoint-every") { HelpName = "N", Description = "with --record: add a checkpoint to the trace every N instructions (0 = none)" };
        var digestEvery = new Option<ulong>("--digest-every") { HelpName = "N", Description = "with --record: log a state digest every N instructions", DefaultValueFactory = _ => new RecorderOptions().DigestInterval };
        var saveCheckpoint = new Option<FileInfo?>("--save-checkpoint") { HelpName = "FILE", Description = "when the run stops (e.g. at --max-instructions), save the machine to this checkpoint file" };
        var restore = new Option<FileInfo?>("--restore") { HelpName = "FILE", Description = "resume the machine saved in this checkpoint file instead of booting a guest" };
        var drive = MachineOptions.Drive();

        var command = new Command("run", "Run a guest program live (optionally recording a trace), or resume a checkpoint");
        command.Arguments.Add(guest);
        foreach (var o in new Option[] { mem, maxInstructions, serial, stats, record, checkpointEvery, digestEvery, saveCheckpoint, restore, drive }) command.Options.Add(o);
        kernel.AddTo(command);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var boot = kernel.Read(parse);
            var driveSpec = parse.GetValue(drive) is { } d ? DriveSpec.Parse(d) : null;
            var request = new RunRequest
            {
                GuestPath = parse.GetValue(guest)?.FullName,
                KernelPath = parse.GetValue(kernel.Kernel)?.FullName,
                Boot = boot,
                RestorePath = parse.GetValue(restore)?.FullName,
                Config = new MachineConfig
                {
                    MemorySize = MachineConfig.ParseSize(parse.GetValue(mem)!),
                    Virtio = (boot?.Devices ?? Guest.Devices.Virtio.VirtioDevices.None)
                        | (driveSpec == null ? Guest.Devices.Virtio.VirtioDevices.None : Guest.Devices.Virtio.VirtioDevices.Block),
                },
                Drive = driveSpec,
                MaxInstructions = parse.GetValue(maxInstructions),
                Stats = parse.GetValue(stats),
                RecordPath = parse.GetValue(record)?.FullName,
                CheckpointEvery = parse.GetValue(checkpointEvery),
                DigestEvery = parse.GetValue(digestEvery),
                SaveCheckpointPath = parse.GetValue(saveCheckpoint)?.FullName,
            };
            int sources = (request.GuestPath != null ? 1 : 0) + (request.Boot != null ? 1 : 0) + (request.RestorePath != null ? 1 : 0);
            if (sources != 1) throw new FormatException("give one of: a guest ELF, --kernel Image, --restore FILE");
            if (request.CheckpointEvery != 0 && request.RecordPath == null) throw new FormatException("--checkpoint-every needs --record");
            using var backend = OpenSerial(parse.GetValue(serial)!);
            return Execute(request, backend);
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

    /// <summary>Boots or restores the machine, runs it live, records and checkpoints as asked; returns the exit code.</summary>
    public static int Execute(RunRequest request, ISerialBackend backend)
    {
        byte[] image = [];
        Machine machine;
        var disk = request.Drive?.Open();
        if (request.RestorePath != null)
        {
            byte[] checkpoint = File.ReadAllBytes(request.RestorePath);
            try
            {
                machine = CheckpointFile.Load(checkpoint, new LiveHostPort(backend), disk);
            }
            catch { disk?.Dispose(); throw; }
            Console.Error.WriteLine($"lm: restored {Path.GetFileName(request.RestorePath)} at icount {machine.Icount}");
        }
        else if (request.Boot != null)
        {
            machine = new Machine(request.Config, new LiveHostPort(backend));
            if (disk != null) machine.InsertDisk(disk);
            try { LinuxBoot.Load(machine, request.Boot); }
            catch { machine.Dispose(); disk?.Dispose(); throw; }
        }
        else
        {
            image = File.ReadAllBytes(request.GuestPath!);
            machine = new Machine(request.Config, new LiveHostPort(backend));
            if (disk != null) machine.InsertDisk(disk);
            ElfLoader.Load(machine, image);
        }
        using var _ = machine;
        using var __ = disk;
        ulong timeBase = machine.Clint.Time; // a restored guest's clock continues from where it was saved

        FileStream? traceFile = null;
        TraceRecorder? recorder = null;
        if (request.RecordPath != null)
        {
            traceFile = new FileStream(request.RecordPath, FileMode.Create, FileAccess.Write, FileShare.Read, 1 << 16);
            string name = Path.GetFileName(request.GuestPath ?? request.KernelPath ?? request.RestorePath!);
            recorder = TraceRecorder.Start(traceFile, machine, image, name, "live",
                new RecorderOptions { DigestInterval = request.DigestEvery, CheckpointInterval = request.CheckpointEvery });
            machine.HostPort = new RecordingHostPort(backend, recorder, timeBase);
        }
        else machine.HostPort = new LiveHostPort(backend, timeBase);

        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; machine.RequestStop(); };
        Console.CancelKeyPress += onCancel;
        var clock = Stopwatch.StartNew();
        StopReason reason;
        try { reason = machine.Run(request.MaxInstructions ?? ulong.MaxValue); }
        finally { Console.CancelKeyPress -= onCancel; }
        clock.Stop();
        backend.Flush();

        if (recorder != null)
        {
            recorder.Finish(machine, reason);
            Console.Error.WriteLine($"lm: recorded {recorder.Writer.EventCount} events, {recorder.Writer.BytesWritten} bytes to {request.RecordPath}");
            recorder.Dispose();
            traceFile!.Dispose();
        }
        if (request.SaveCheckpointPath != null)
        {
            CheckpointFile.Save(machine, request.SaveCheckpointPath);
            Console.Error.WriteLine($"lm: saved checkpoint at icount {machine.Icount} to {request.SaveCheckpointPath}");
        }
        if (request.Stats)
        {
            double seconds = clock.Elapsed.TotalSeconds;
            Console.Error.WriteLine($"lm: instructions {machine.Icount}, seconds {seconds:F3}, guest MIPS {machine.Icount / seconds / 1e6:F1}, host JIT {System.Runtime.JitInfo.GetCompilationTime().TotalMilliseconds:F0} ms for {System.Runtime.JitInfo.GetCompiledMethodCount()} methods (compiled blocks included)");
        }
        switch (reason)
        {
            case StopReason.Exited: return machine.ExitCode!.Value;
            case StopReason.InstructionLimit:
                Console.Error.WriteLine($"lm: instruction limit reached at icount {machine.Icount}");
                return InstructionLimitExit;
            case StopReason.Idle:
                Console.Error.WriteLine($"lm: guest waits in WFI at pc 0x{machine.Pc:x} with no interrupt source left (input closed){LastTrap(machine)}");
                return IdleExit;
            default:
                Console.Error.WriteLine($"lm: interrupted at icount {machine.Icount}");
                return InterruptedExit;
        }
    }

    /// <summary>The trap the guest last took, if any: where a firmware that gave up (and sleeps for good) went wrong.</summary>
    private static string LastTrap(Machine machine)
    {
        ref var c = ref machine.Cpu;
        return c.Mcause == 0 && c.Mepc == 0 ? "" : $"; last trap mcause 0x{c.Mcause:x} at mepc 0x{c.Mepc:x}, mtval 0x{c.Mtval:x}";
    }
}
