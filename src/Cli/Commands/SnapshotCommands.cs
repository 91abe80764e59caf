using System.CommandLine;
using LiveMigration.Guest;

namespace LiveMigration.Cli.Commands;

/// <summary>
/// `lm snapshot GUEST.elf --at ICOUNT -o FILE` (or `--kernel Image ...`): boot a guest, run it live to ICOUNT, save a standalone
/// checkpoint. `lm restore FILE`: resume it (the same as `lm run --restore FILE`).
/// </summary>
public static class SnapshotCommands
{
    public static Command CreateSnapshot()
    {
        var guest = new Argument<FileInfo?>("guest") { Description = "RISC-V ELF64 executable to boot (omit with --kernel)", Arity = ArgumentArity.ZeroOrOne };
        var kernel = new KernelBootOptions();
        var at = new Option<ulong>("--at") { HelpName = "ICOUNT", Description = "icount at which to save (the guest runs live until then)", Required = true };
        var output = new Option<FileInfo>("--output", "-o") { HelpName = "FILE", Description = "checkpoint file to write", Required = true };
        var mem = new Option<string>("--mem") { HelpName = "SIZE", Description = "guest RAM size (e.g. 128M, 1G)", DefaultValueFactory = _ => "128M" };
        var serial = new Option<string>("--serial") { HelpName = "SPEC", Description = "stdio or tcp:HOST:PORT", DefaultValueFactory = _ => "stdio" };
        var command = new Command("snapshot", "Boot a guest, run it to an icount and save a checkpoint file (resume it with `lm restore`)");
        command.Arguments.Add(guest);
        command.Options.Add(at);
        command.Options.Add(output);
        command.Options.Add(mem);
        command.Options.Add(serial);
        kernel.AddTo(command);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var boot = kernel.Read(parse);
            if ((boot == null) == (parse.GetValue(guest) == null)) throw new FormatException("give one of: a guest ELF, --kernel Image");
            using var backend = RunCommand.OpenSerial(parse.GetValue(serial)!);
            int code = RunCommand.Execute(new RunCommand.RunRequest
            {
                GuestPath = parse.GetValue(guest)?.FullName,
                Boot = boot,
                KernelPath = parse.GetValue(kernel.Kernel)?.FullName,
                Config = new MachineConfig
                {
                    MemorySize = MachineConfig.ParseSize(parse.GetValue(mem)!),
                    Virtio = boot?.Devices ?? Guest.Devices.Virtio.VirtioDevices.None,
                },
                MaxInstructions = parse.GetValue(at),
                SaveCheckpointPath = parse.GetValue(output)!.FullName,
            }, backend);
            return code == RunCommand.InstructionLimitExit ? 0 : code;
        }));
        return command;
    }

    public static Command CreateRestore()
    {
        var file = new Argument<FileInfo>("checkpoint") { Description = "checkpoint file written by `lm snapshot` or `--save-checkpoint`" };
        var maxInstructions = new Option<ulong?>("--max-instructions") { HelpName = "N", Description = "stop with exit code 124 at this icount" };
        var serial = new Option<string>("--serial") { HelpName = "SPEC", Description = "stdio or tcp:HOST:PORT", DefaultValueFactory = _ => "stdio" };
        var record = new Option<FileInfo?>("--record") { HelpName = "FILE", Description = "record the resumed run into this trace (its initial checkpoint is the restored state)" };
        var command = new Command("restore", "Resume a guest from a checkpoint file (same as `lm run --restore FILE`)");
        command.Arguments.Add(file);
        command.Options.Add(maxInstructions);
        command.Options.Add(serial);
        command.Options.Add(record);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            using var backend = RunCommand.OpenSerial(parse.GetValue(serial)!);
            return RunCommand.Execute(new RunCommand.RunRequest
            {
                RestorePath = parse.GetValue(file)!.FullName,
                MaxInstructions = parse.GetValue(maxInstructions),
                RecordPath = parse.GetValue(record)?.FullName,
            }, backend);
        }));
        return command;
    }
}
