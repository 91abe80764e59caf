using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Cli;

/// <summary>`lm run` through the real CLI binary: exit codes, error lines, stdout hygiene.</summary>
public class LmRunTests
{
    internal static readonly Lazy<string> LmDll = new(BuildCli, LazyThreadSafetyMode.ExecutionAndPublication);

    private static string BuildCli()
    {
        var r = Tool.Run("dotnet", ["build", "src/Cli", "-c", "Release", "-nologo", "-v", "q", "-clp:ErrorsOnly"], timeoutMs: 300_000);
        if (r.ExitCode != 0) throw new InvalidOperationException($"dotnet build src/Cli failed:\n{Encoding.UTF8.GetString(r.Stdout)}\n{r.Stderr}");
        string dll = Path.Combine(Repo.Root, "src", "Cli", "bin", "Release", "net10.0", "lm.dll");
        Assert.True(File.Exists(dll), dll);
        return dll;
    }

    private static ToolResult Lm(byte[]? stdin, params string[] args)
    {
        // Every run here takes well under a second of guest time; 60 s means the host is stuck
        // (e.g. sleeping in WFI while input is queued).
        var r = Tool.Run("dotnet", [LmDll.Value, .. args], stdin ?? [], timeoutMs: 60_000);
        Assert.False(r.TimedOut, $"lm {string.Join(' ', args)} did not finish in 60 s; stdout so far: {Encoding.ASCII.GetString(r.Stdout)}");
        return r;
    }

    private static string TempElf(byte[] image)
    {
        string path = Path.Combine(Path.GetTempPath(), $"lm-test-{Guid.NewGuid():N}.elf");
        File.WriteAllBytes(path, image);
        return path;
    }

    private static string Out(ToolResult r) => Encoding.ASCII.GetString(r.Stdout);

    [Fact]
    public void PassingGuestExitsZeroWithOnlyItsOutputOnStdout()
    {
        var r = Lm(null, "run", Repo.Guest("hello"));
        Assert.Equal(0, r.ExitCode);
        Assert.Equal("Hello from LiveMigration guest!\n", Out(r));
        Assert.Equal("", r.Stderr);
    }

    [Fact]
    public void FailingGuestExitsWithItsCode()
    {
        string elf = TempElf(ElfBuilder.PrintAndExit("bye\n", 42));
        try
        {
            var r = Lm(null, "run", elf);
            Assert.Equal(42, r.ExitCode);
            Assert.Equal("bye\n", Out(r));
        }
        finally { File.Delete(elf); }
    }

    [Fact]
    public void InstructionLimitExits124()
    {
        var r = Lm(null, "run", "--max-instructions", "100000", Repo.Guest("compute_forever"));
        Assert.Equal(124, r.ExitCode);
        Assert.Contains("instruction limit", r.Stderr);
        Assert.Contains("100000", r.Stderr);
        Assert.Equal("", Out(r));
    }

    [Fact]
    public void BadElfIsOneErrorLineAndExit2()
    {
        string elf = TempElf("this is not an ELF file, only some text padded out to more than 64 bytes......"u8.ToArray());
        try
        {
            var r = Lm(null, "run", elf);
            Assert.Equal(2, r.ExitCode);
            Assert.StartsWith("lm: error: ", r.Stderr);
            Assert.Single(r.Stderr.TrimEnd('\n').Split('\n'));
            Assert.Contains("not an ELF", r.Stderr);
            Assert.Equal("", Out(r));
        }
        finally { File.Delete(elf); }
    }

    [Fact]
    public void MissingFileIsOneErrorLineAndExit2()
    {
        var r = Lm(null, "run", "/nonexistent/guest.elf");
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("lm: error: ", r.Stderr);
        Assert.Single(r.Stderr.TrimEnd('\n').Split('\n'));
    }

    [Fact]
    public void BadMemorySizeIsExit2()
    {
        var r = Lm(null, "run", "--mem", "12Q", Repo.Guest("hello"));
        Assert.Equal(2, r.ExitCode);
        Assert.StartsWith("lm: error: ", r.Stderr);
    }

    [Fact]
    public void StatsGoToStderrAndStdoutStaysClean()
    {
        var r = Lm(null, "run", "--stats", Repo.Guest("compute_small"));
        Assert.Equal(0, r.ExitCode);
        Assert.Matches(@"^compute iters 150000 checksum 0x[0-9a-f]+\n$", Out(r));
        Assert.Contains("MIPS", r.Stderr);
        Assert.Contains("instructions", r.Stderr);
    }

    [Fact]
    public void StdinFeedsTheUart()
    {
        var r = Lm(Encoding.ASCII.GetBytes(GuestRun.KvScript), "run", Repo.Guest("kv"));
        Assert.Equal(0, r.ExitCode);
        Assert.Equal(GuestRun.Run("kv").Text, Out(r));
    }

    [Fact]
    public void SerialOverTcpCarriesTheUart()
    {
        var psi = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Repo.Root,
        };
        foreach (string a in new[] { LmDll.Value, "run", "--serial", "tcp:127.0.0.1:0", Repo.Guest("kv") }) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        try
        {
            var stdoutTask = p.StandardOutput.ReadToEndAsync();
            var readLine = p.StandardError.ReadLineAsync();
            Assert.True(readLine.Wait(30_000), "lm did not announce its serial port");
            var m = Regex.Match(readLine.Result ?? "", @"tcp:127\.0\.0\.1:(\d+)");
            Assert.True(m.Success, readLine.Result);

            using var client = new TcpClient("127.0.0.1", int.Parse(m.Groups[1].Value));
            using var stream = client.GetStream();
            stream.Write(Encoding.ASCII.GetBytes(GuestRun.KvScript));
            var received = new MemoryStream();
            stream.ReadTimeout = 30_000;
            var buffer = new byte[4096];
            int n;
            while ((n = stream.Read(buffer)) > 0) received.Write(buffer, 0, n); // ends when the guest exits

            Assert.True(p.WaitForExit(30_000));
            Assert.Equal(0, p.ExitCode);
            Assert.Equal(GuestRun.Run("kv").Text, Encoding.ASCII.GetString(received.ToArray()));
            Assert.Equal("", stdoutTask.Result);
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
    }
}
