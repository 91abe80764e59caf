using System.CommandLine;

namespace LiveMigration.Cli.Commands;

/// <summary>Options that describe a machine, shared by the commands that build one here or on a host.</summary>
public static class MachineOptions
{
    /// <summary>`--drive FILE[,readonly]`, shared by the commands that build a machine.</summary>
    public static Option<string?> Drive() => new("--drive")
    {
        HelpName = "FILE[,readonly]",
        Description = "a raw disk image for virtio-blk (as qemu -drive file=FILE,format=raw,if=none,id=d0 -device virtio-blk-device,drive=d0); flushes are written to the file",
    };
}
