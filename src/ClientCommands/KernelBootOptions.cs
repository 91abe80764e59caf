using System.CommandLine;
using LiveMigration.Guest.Platform;

namespace LiveMigration.Cli.Commands;

/// <summary>
/// QEMU's words for booting a kernel: --kernel Image [--initrd FILE] [--append CMDLINE] [--bios FW].
/// One set of options for every command that boots a guest; files are read here, with one-line errors.
/// </summary>
public sealed class KernelBootOptions
{
    /// <summary>Debian's OpenSBI generic build (package opensbi): the firmware for QEMU and for us.</summary>
    public const string DefaultFirmware = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin";

    public Option<FileInfo?> Kernel { get; } = new("--kernel") { HelpName = "Image", Description = "boot this Linux kernel Image (arch/riscv/boot/Image) under OpenSBI, as qemu -M virt -kernel does" };
    public Option<FileInfo?> Initrd { get; } = new("--initrd") { HelpName = "FILE", Description = "with --kernel: initramfs (cpio) to load high in RAM" };
    public Option<string?> Append { get; } = new("--append") { HelpName = "CMDLINE", Description = "with --kernel: the kernel command line" };
    public Option<FileInfo?> Bios { get; } = new("--bios") { HelpName = "FW", Description = $"with --kernel: M-mode firmware (default {DefaultFirmware})" };
    public Option<bool> NoBalloon { get; } = new("--no-balloon") { Description = "with --kernel: no virtio-balloon, so the kernel reports no free pages and every strategy sends them (QEMU without -device virtio-balloon-device)" };

    public void AddTo(Command command)
    {
        foreach (var o in new Option[] { Kernel, Initrd, Append, Bios, NoBalloon }) command.Options.Add(o);
    }

    /// <summary>The images named on the command line, or null without --kernel (then none of the others may be given).</summary>
    public BootImages? Read(ParseResult parse)
    {
        var kernel = parse.GetValue(Kernel);
        var initrd = parse.GetValue(Initrd);
        string? append = parse.GetValue(Append);
        var bios = parse.GetValue(Bios);
        bool noBalloon = parse.GetValue(NoBalloon);
        if (kernel == null)
        {
            if (initrd != null || append != null || bios != null || noBalloon) throw new FormatException("--initrd, --append, --bios and --no-balloon need --kernel");
            return null;
        }
        return Read(kernel.FullName, initrd?.FullName, append, bios?.FullName) with { Balloon = !noBalloon };
    }

    /// <summary>Reads the images of a kernel boot (the firmware defaults to Debian's OpenSBI).</summary>
    public static BootImages Read(string kernel, string? initrd, string? append, string? bios) => new()
    {
        Firmware = ReadFile(bios ?? DefaultFirmware, "firmware", bios == null ? " (install the Debian package opensbi or give --bios)" : ""),
        Kernel = ReadFile(kernel, "kernel Image", ""),
        Initrd = initrd == null ? null : ReadFile(initrd, "initrd", ""),
        CommandLine = append,
    };

    private static byte[] ReadFile(string path, string what, string hint)
    {
        try { return File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            string why = e is FileNotFoundException or DirectoryNotFoundException ? "no such file" : e.Message;
            throw new BootImageException($"cannot read {what} {path}: {why}{hint}");
        }
    }
}
