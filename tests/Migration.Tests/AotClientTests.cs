using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

/// <summary>
/// The NativeAOT client (src/Client, artifacts/lm-client/lm) that ./lm runs for the client commands,
/// against `lm host` processes this test starts: every command prints exactly what the full CLI
/// (lm.dll, JIT) prints, with the same exit code; and ./lm really runs the AOT binary.
/// </summary>
public sealed class AotClientTests(ITestOutputHelper output) : IDisposable
{
    private readonly List<Process> _processes = [];
    private readonly string _workDir = Directory.CreateTempSubdirectory("lm-aot-").FullName;

    /// <summary>scripts/build-client.sh, once per test run: publishes the client when a source is newer (setup.sh has normally done it).</summary>
    private static readonly Lazy<string> Client = new(() =>
    {
        string root = LiveMigration.Tests.Shared.RepoPaths.Root;
        var psi = new ProcessStartInfo(Path.Combine(root, "scripts", "build-client.sh")) { RedirectStandardError = true, RedirectStandardOutput = true };
        psi.Environment["LM_CLIENT_RETRY"] = "1"; // a failure recorded earlier is tried again, not taken as given
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        if (!p.WaitForExit(20 * 60_000)) { p.Kill(); throw new TimeoutException("scripts/build-client.sh took over 20 minutes"); }
        Assert.True(p.ExitCode == 0, $"the AOT client did not build:\n{err.Result}");
        return Path.Combine(root, "artifacts", "lm-client", "lm");
    });

    private static string Jit => Path.Combine(AppContext.BaseDirectory, "lm.dll");

    private Process Spawn(bool aot, string[] args, Dictionary<string, string>? env = null, string? exe = null)
    {
        var psi = new ProcessStartInfo(exe ?? (aot ? Client.Value : "dotnet")) { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false, WorkingDirectory = _workDir };
        if (!aot && exe == null) psi.ArgumentList.Add(Jit);
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env ?? []) psi.Environment[k] = v;
        var p = Process.Start(psi)!;
        _processes.Add(p);
        return p;
    }

    private (int Code, string Out, string Err) Run(bool aot, params string[] args) => Wait(Spawn(aot, args), (aot ? "aot " : "jit ") + string.Join(' ', args));

    private (int Code, string Out, string Err) Wait(Process p, string what)
    {
        p.StandardInput.Close();
        var err = p.StandardError.ReadToEndAsync();
        string o = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(60_000), $"{what} hung");
        output.WriteLine($"$ {what} -> {p.ExitCode}\n{o}{err.Result}");
        return (p.ExitCode, o, err.Result);
    }

    /// <summary>The AOT client and the full CLI, same arguments: same exit code, stdout and stderr.</summary>
    private (int Code, string Out, string Err) Same(params string[] args)
    {
        var aot = Run(true, args);
        var jit = Run(false, args);
        Assert.Equal(jit.Code, aot.Code);
        Assert.Equal(jit.Out, aot.Out);
        Assert.Equal(jit.Err, aot.Err);
        return aot;
    }

    private string StartHost(string? data = null)
    {
        var p = Spawn(false, data == null ? ["host", "--listen", "127.0.0.1:0", "--quiet"] : ["host", "--listen", "127.0.0.1:0", "--quiet", "--data", data]);
        string line = p.StandardOutput.ReadLine() ?? throw new InvalidOperationException("lm host printed nothing");
        var m = Regex.Match(line, @"listening on (\S+)");
        Assert.True(m.Success, line);
        return m.Groups[1].Value;
    }

    [Fact]
    public void Client_commands_print_what_the_full_cli_prints()
    {
        string a = StartHost(), b = StartHost();
        var start = Run(true, "start", "--host", a, Path.Combine(Guests.Dir, "hello.elf"), "--name", "hello", "--mem", "16M");
        Assert.Equal(0, start.Code);
        Assert.Matches($@"^started 'hello' on {Regex.Escape(a)}; console tcp:127\.0\.0\.1:\d+\n$", start.Out);
        // hello exits at once: its row (state, icount, exit code) no longer changes between the two runs.
        var until = DateTime.UtcNow.AddSeconds(30);
        while (!Run(true, "status", "--host", a, "hello").Out.Contains("exit code") && DateTime.UtcNow < until) Thread.Sleep(100);

        Assert.Contains("exit code 0", Same("status", "--host", a).Out);
        Assert.Contains("exit code 0", Same("status", "--host", a, "hello").Out);
        var json = Same("status", "--host", a, "--json"); // protobuf's JsonFormatter, trimmed
        using (var doc = JsonDocument.Parse(json.Out))
            Assert.Equal("hello", doc.RootElement.GetProperty("guests")[0].GetProperty("name").GetString());
        Assert.Equal("no guests\n", Same("status", "--host", b).Out);
        Assert.Equal(2, Same("status", "--host", a, "nosuch").Code);

        // One-line errors and parse errors, with their exit codes.
        var refused = Same("status", "--host", "127.0.0.1:1");
        Assert.Equal(2, refused.Code);
        Assert.StartsWith("lm: error: cannot connect to 127.0.0.1:1", refused.Err);
        Assert.NotEqual(0, Same("stop", "hello").Code); // --host missing
        Assert.NotEqual(0, Same("migrate", "hello", "--from", a, "--to", b, "--strategy", "teleport").Code);
        Assert.Equal(2, Same("migrate", "hello", "--from", a).Code);
        Assert.Equal(2, Same("migrate", "hello", "--from", a, "--to", b, "--max-throttle", "100").Code);
        Assert.Equal(2, Same("cancel", "--host", a, "nosuch").Code);
        Assert.Equal(2, Same("resolve", "--host", a, "nosuch").Code);
        Assert.Equal(2, Same("start", "--host", a, "--name", "x").Code);
        Assert.Equal(2, Same("status", "--host", a, "--tls", Path.Combine(_workDir, "no-such-dir")).Code);
        Assert.Equal(0, Same("status", "--help").Code);
        Assert.Equal(0, Same("migrate", "--help").Code);

        Assert.Equal(0, Run(true, "stop", "--host", a, "hello").Code);
        Assert.Equal("no guests\n", Same("status", "--host", a).Out);
    }

    [Fact]
    public void Aot_client_migrates_a_guest_and_its_console_follows()
    {
        string data = Directory.CreateTempSubdirectory("lm-aot-host-").FullName;
        string a = StartHost(data), b = StartHost();
        Assert.Equal(0, Run(true, "start", "--host", a, Path.Combine(Guests.Dir, "idle_forever.elf"), "--name", "idle", "--mem", "32M").Code);
        var console = Run(true, "console", "--host", a, "idle"); // stdin closed: attaches, then leaves
        Assert.Equal(0, console.Code);
        Assert.Equal($"lm console: attached to 'idle' on {a}", console.Err.Split('\n')[0].Split(" (tcp:")[0]);

        // --timeline plots only in the full CLI (./lm sends it there): the AOT client says so in one line, before migrating.
        var plot = Run(true, "migrate", "idle", "--from", a, "--to", b, "--timeline", "t.svg");
        Assert.Equal(2, plot.Code);
        Assert.Equal("lm: error: --timeline needs the full CLI (src/Cli): this client carries no plotting\n", plot.Err);

        var migrate = Run(true, "migrate", "idle", "--from", a, "--to", b, "--json");
        Assert.Equal(0, migrate.Code);
        using (var doc = JsonDocument.Parse(migrate.Out))
        {
            Assert.True(doc.RootElement.GetProperty("success").GetBoolean());
            Assert.True(doc.RootElement.GetProperty("digestVerified").GetBoolean());
        }
        // The source host (JIT) kept the same report: the AOT client's JsonFormatter wrote what the host's did.
        string stored = Assert.Single(Directory.GetFiles(Path.Combine(data, "reports"), "*.json"));
        Assert.Equal(File.ReadAllText(stored).TrimEnd('\n'), migrate.Out.TrimEnd('\n'));
        var status = Run(true, "status", "--host", b, "--json");
        Assert.Contains("\"running\"", status.Out);
        var table = Run(true, "migrate", "idle", "--from", b, "--to", a); // the report table, not interactive here
        Assert.Equal(0, table.Code);
        Assert.Contains($"migrated idle", table.Out);
        Assert.Contains("digest", table.Out);
        Assert.Equal(Run(false, "status", "--host", a, "idle", "--json").Out.Contains("\"running\""), Run(true, "status", "--host", a, "idle", "--json").Out.Contains("\"running\""));
        Assert.Equal(2, Same("cancel", "--host", a, "idle").Code); // no migration in progress
        Assert.Empty(Directory.GetFileSystemEntries(_workDir));
        try { Directory.Delete(data, recursive: true); } catch (IOException) { }
    }

    [Fact]
    public void Trace_commands_print_what_the_full_cli_prints()
    {
        string trace = Path.Combine(LiveMigration.Tests.Shared.RepoPaths.Root, "traces", "kv.lmtrace");
        Assert.Contains("format version", Same("trace", "info", trace).Out);
        Assert.StartsWith("ok: ", Same("trace", "verify", trace).Out);
        Assert.NotEmpty(Same("trace", "dump", trace, "--to", "200000").Out);
        string cut = Path.Combine(_workDir, "cut.lmtrace");
        byte[] bytes = File.ReadAllBytes(trace);
        File.WriteAllBytes(cut, bytes.AsSpan(0, bytes.Length - 100).ToArray());
        Assert.Equal(2, Same("trace", "verify", cut).Code);
        Assert.Contains("INCOMPLETE", Same("trace", "info", cut).Out);
        Assert.Equal(2, Same("trace", "info", Path.Combine(_workDir, "missing.lmtrace")).Code);
    }

    /// <summary>
    /// ./lm runs the AOT binary for a client command: with no .NET runtime to find (DOTNET_ROOT pointing
    /// nowhere), the ReadyToRun apphost could not start, the AOT client answers as usual.
    /// </summary>
    [Fact]
    public void Launcher_runs_client_commands_on_the_aot_binary()
    {
        _ = Client.Value;
        string launcher = Path.Combine(LiveMigration.Tests.Shared.RepoPaths.Root, "lm");
        var noRuntime = new Dictionary<string, string> { ["DOTNET_ROOT"] = Path.Combine(_workDir, "no-dotnet") };
        var r = Wait(Spawn(true, ["status", "--host", "127.0.0.1:1"], noRuntime, exe: launcher), "./lm status --host 127.0.0.1:1");
        Assert.Equal(2, r.Code);
        Assert.Equal("", r.Out);
        Assert.StartsWith("lm: error: cannot connect to 127.0.0.1:1", r.Err); // and nothing built first: no progress line
    }

    public void Dispose()
    {
        foreach (var p in _processes)
        {
            try { if (!p.HasExited) { p.Kill(); p.WaitForExit(5000); } } catch (InvalidOperationException) { }
            p.Dispose();
        }
        try { Directory.Delete(_workDir, recursive: true); } catch (IOException) { }
    }
}
