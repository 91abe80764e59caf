using System.Diagnostics;

namespace LiveMigration.Guest.Tests.Infra;

/// <summary>Locations in the repository and the external tools some tests need.</summary>
public static class Repo
{
    public static string Root => LiveMigration.Tests.Shared.RepoPaths.Root;

    /// <summary>Path of guests/build/NAME.elf, building the guests once per test run if they are missing.</summary>
    public static string Guest(string name) => LiveMigration.Tests.Shared.RepoPaths.Guest(name);
}

public sealed record ToolResult(int ExitCode, byte[] Stdout, string Stderr, bool TimedOut);

public static class Tool
{
    /// <summary>True when <paramref name="name"/> is an executable on PATH.</summary>
    public static bool OnPath(string name)
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator))
            if (dir.Length > 0 && File.Exists(Path.Combine(dir, name))) return true;
        return false;
    }

    public static ToolResult Run(string file, IEnumerable<string> args, byte[]? stdin = null, int timeoutMs = 60_000, string? workDir = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workDir ?? Repo.Root,
        };
        foreach (string a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = new MemoryStream();
        var outTask = p.StandardOutput.BaseStream.CopyToAsync(stdout);
        var errTask = p.StandardError.ReadToEndAsync();
        if (stdin != null) p.StandardInput.BaseStream.Write(stdin);
        p.StandardInput.Close();
        bool exited = p.WaitForExit(timeoutMs);
        if (!exited) p.Kill(entireProcessTree: true);
        p.WaitForExit();
        outTask.Wait();
        return new ToolResult(exited ? p.ExitCode : -1, stdout.ToArray(), errTask.Result, !exited);
    }
}

/// <summary>A [Fact] that skips itself, with the reason, when a command-line tool is not installed.</summary>
public sealed class RequiresToolFactAttribute : FactAttribute
{
    public RequiresToolFactAttribute(string tool)
    {
        if (!Tool.OnPath(tool)) Skip = $"{tool} is not installed (Debian: {PackageOf(tool)})";
    }

    internal static string PackageOf(string tool) => tool switch
    {
        "qemu-system-riscv64" => "qemu-system-misc",
        "riscv64-unknown-elf-gcc" => "gcc-riscv64-unknown-elf",
        "dtc" => "device-tree-compiler",
        _ => tool,
    };
}

/// <summary>The [Theory] counterpart of <see cref="RequiresToolFactAttribute"/>.</summary>
public sealed class RequiresToolTheoryAttribute : TheoryAttribute
{
    public RequiresToolTheoryAttribute(string tool)
    {
        if (!Tool.OnPath(tool)) Skip = $"{tool} is not installed (Debian: {RequiresToolFactAttribute.PackageOf(tool)})";
    }
}
