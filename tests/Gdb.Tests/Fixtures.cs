using System.Diagnostics;
using LiveMigration.Guest;
using LiveMigration.Guest.Loader;
using LiveMigration.Recorder;
using LiveMigration.Trace;

namespace LiveMigration.Gdb.Tests;

public static class Repo
{
    public static string Root => LiveMigration.Tests.Shared.RepoPaths.Root;

    public static string Guest(string name) => LiveMigration.Tests.Shared.RepoPaths.Guest(name);

    /// <summary>A symbol's address, from the cross toolchain's nm (the guests are built with it).</summary>
    public static ulong Symbol(string elf, string name)
    {
        var psi = new ProcessStartInfo("riscv64-unknown-elf-nm", [elf]) { RedirectStandardOutput = true };
        using var p = Process.Start(psi)!;
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        foreach (var line in output.Split('\n'))
        {
            var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (f.Length == 3 && f[2] == name) return Convert.ToUInt64(f[0], 16);
        }
        throw new KeyNotFoundException($"symbol {name} not in {elf}");
    }

    public static bool OnPath(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => File.Exists(Path.Combine(d, tool)));
}

/// <summary>Records guests in the scripted (deterministic) world, once per test run.</summary>
public static class Recordings
{
    private static readonly Dictionary<string, byte[]> Cache = [];

    public static byte[] Get(string guest, ulong digestInterval = 1 << 16, byte[]? input = null)
    {
        lock (Cache)
        {
            string key = $"{guest}/{digestInterval}/{(input == null ? "" : Convert.ToHexString(input))}";
            if (Cache.TryGetValue(key, out var t)) return t;
            byte[] image = File.ReadAllBytes(Repo.Guest(guest));
            var ms = new MemoryStream();
            using var machine = new Machine(new MachineConfig(), new ScriptedHostPort());
            ElfLoader.Load(machine, image);
            using (var recorder = TraceRecorder.Start(ms, machine, image, guest + ".elf", "scripted", new RecorderOptions { DigestInterval = digestInterval, FlushInterval = null }))
            {
                machine.HostPort = new ScriptedHostPort(input, recorder, 100_000);
                var reason = machine.Run(2_000_000_000);
                recorder.Finish(machine, reason);
            }
            return Cache[key] = ms.ToArray();
        }
    }

    public static TraceFile Open(string guest, byte[]? input = null) => TraceFile.Open(new MemoryStream(Get(guest, input: input)));

    private static byte[]? _linux;

    /// <summary>The first <paramref name="instructions"/> of a Linux boot (guests/linux, Debian's OpenSBI), recorded scripted.</summary>
    public static TraceFile Linux(ulong instructions = 25_000_000)
    {
        lock (Cache)
        {
            if (_linux == null)
            {
                var (image, initramfs) = LiveMigration.Tests.Shared.RepoPaths.LinuxGuest();
                var boot = new LiveMigration.Guest.Platform.BootImages
                {
                    Firmware = File.ReadAllBytes("/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"),
                    Kernel = File.ReadAllBytes(image), Initrd = File.ReadAllBytes(initramfs), CommandLine = "console=ttyS0 earlycon",
                };
                var ms = new MemoryStream();
                var config = new MachineConfig { MemorySize = 256 << 20, Virtio = LiveMigration.Guest.Devices.Virtio.VirtioBus.KernelBootDevices };
                using var machine = new Machine(config, new ScriptedHostPort());
                LiveMigration.Guest.Platform.LinuxBoot.Load(machine, boot);
                using (var recorder = TraceRecorder.Start(ms, machine, [], "Image", "scripted", new RecorderOptions { DigestInterval = 1 << 22, FlushInterval = null }))
                {
                    machine.HostPort = new ScriptedHostPort(null, recorder, 100_000);
                    var reason = machine.Run(instructions);
                    recorder.Finish(machine, reason);
                }
                _linux = ms.ToArray();
            }
            return TraceFile.Open(new MemoryStream(_linux));
        }
    }
}

/// <summary>A fact that needs gdb-multiarch (scripts/setup.sh installs it).</summary>
public sealed class RequiresGdbFactAttribute : FactAttribute
{
    public RequiresGdbFactAttribute()
    {
        if (!Repo.OnPath("gdb-multiarch")) Skip = "gdb-multiarch is not installed: run scripts/setup.sh (Debian package gdb-multiarch)";
    }
}
