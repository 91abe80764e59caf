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
}

/// <summary>A fact that needs gdb-multiarch (scripts/setup.sh installs it).</summary>
public sealed class RequiresGdbFactAttribute : FactAttribute
{
    public RequiresGdbFactAttribute()
    {
        if (!Repo.OnPath("gdb-multiarch")) Skip = "gdb-multiarch is not installed: run scripts/setup.sh (Debian package gdb-multiarch)";
    }
}
