using LiveMigration.Migration.Protocol;
using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using LiveMigration.Migration.Hosting;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

/// <summary>Two `lm host` processes, driven by the `lm` CLI as a user would.</summary>
public sealed class ProcessTests(ITestOutputHelper output) : IDisposable
{
    private readonly List<Process> _processes = [];
    /// <summary>Every lm process runs here, so a file written into the current directory shows up.</summary>
    private readonly string _workDir = Directory.CreateTempSubdirectory("lm-cwd-").FullName;
    private static string Lm => Path.Combine(AppContext.BaseDirectory, "lm.dll");

    private Process Spawn(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true, UseShellExecute = false, WorkingDirectory = _workDir };
        psi.ArgumentList.Add(Lm);
        foreach (var a in args) psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        _processes.Add(p);
        return p;
    }

    private string StartHost() => StartHostProcess().Address;

    private (string Address, Process Process) StartHostProcess()
    {
        var p = Spawn("host", "--listen", "127.0.0.1:0", "--disk-dir", _workDir);
        p.ErrorDataReceived += (_, e) => { if (e.Data != null) try { output.WriteLine("host: " + e.Data); } catch (InvalidOperationException) { } };
        p.BeginErrorReadLine();
        string line = p.StandardOutput.ReadLine() ?? throw new InvalidOperationException("lm host printed nothing");
        var m = Regex.Match(line, @"listening on (\S+)");
        Assert.True(m.Success, line);
        return (m.Groups[1].Value, p);
    }

    private static void Signal(Process p, string signal)
    {
        using var kill = Process.Start("kill", $"-{signal} {p.Id}");
        kill.WaitForExit();
    }

    private (int Code, string Out, string Err) Lm_(params string[] args)
    {
        var p = Spawn(args);
        var err = p.StandardError.ReadToEndAsync();
        string o = p.StandardOutput.ReadToEnd();
        p.WaitForExit(60000);
        output.WriteLine($"$ lm {string.Join(' ', args)} -> {p.ExitCode}\n{o}{err.Result}");
        return (p.ExitCode, o, err.Result);
    }

    [Theory]
    [InlineData("log")]
    [InlineData("stopcopy")]
    [InlineData("postcopy")]
    public void Lm_host_processes_migrate_a_guest_and_the_console_follows(string strategy)
    {
        string a = StartHost(), b = StartHost();
        var start = Lm_("start", "--host", a, Path.Combine(Guests.Dir, "idle_forever.elf"), "--name", "idle", "--mem", "32M");
        Assert.Equal(0, start.Code);
        using var console = new ConsoleClient(a, "idle");
        console.WaitFor(t => t.Contains("tick 1\n"), 10000);

        Assert.Empty(Directory.GetFileSystemEntries(_workDir));
        var plain = Lm_("migrate", "idle", "--from", a, "--to", b, "--strategy", strategy, "--timeline", "timeline.pdf");
        Assert.Equal(2, plain.Code);
        Assert.Contains("as .png or .svg", plain.Err);
        string timeline = strategy == "log" ? "timeline.png" : "timeline.svg";
        var migrate = Lm_("migrate", "idle", "--from", a, "--to", b, "--strategy", strategy, "--bandwidth", "1gbit", "--json", "--timeline", timeline);
        Assert.Equal(0, migrate.Code);
        using var json = JsonDocument.Parse(migrate.Out);
        var r = json.RootElement;
        Assert.True(r.GetProperty("success").GetBoolean());
        Assert.True(r.GetProperty("digestVerified").GetBoolean());
        ulong parts = 0;
        foreach (var field in new[] { "bytesCheckpoint", "bytesLog", "bytesState", "bytesProtocol", "bytesPostcopy" }) parts += ulong.Parse(r.GetProperty(field).GetString()!);
        Assert.True(parts > 0);
        Assert.Equal(parts, ulong.Parse(r.GetProperty("bytesTotal").GetString()!));
        Assert.Equal("bytes", r.GetProperty("units").GetProperty("bytes").GetString());
        Assert.Equal("seconds", r.GetProperty("units").GetProperty("time").GetString());
        // Only the file asked for lands in the current directory.
        Assert.Equal([timeline], Directory.GetFileSystemEntries(_workDir).Select(Path.GetFileName));
        byte[] plot = File.ReadAllBytes(Path.Combine(_workDir, timeline));
        if (strategy == "log") Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, plot[..4]);
        else Assert.Contains("<svg", System.Text.Encoding.UTF8.GetString(plot));

        var status = Lm_("status", "--host", a, "idle", "--json");
        Assert.Contains("\"moved\"", status.Out);
        Assert.Contains(b, status.Out);
        Assert.Contains("\"running\"", Lm_("status", "--host", b, "--json").Out);

        console.Follow();
        Assert.Equal(b, console.CurrentHost);
        console.WaitFor(t => Regex.Matches(t, @"(?m)^tick \d+").Count >= 3, 10000);
        EndToEndTests.AssertContinuous(console.Text, "tick", 3);

        var again = Lm_("migrate", "idle", "--from", a, "--to", b, "--json");
        Assert.NotEqual(0, again.Code);
        Assert.Contains("has moved to", again.Err);
        var resume = Lm_("migrate", "idle", "--from", a, "--resume");
        Assert.Equal(2, resume.Code);
        Assert.Contains("nothing to resume", resume.Err);
        var noTarget = Lm_("migrate", "idle", "--from", b);
        Assert.Equal(2, noTarget.Code);
        Assert.Contains("--to HOST:PORT is required", noTarget.Err);
        Assert.Equal(0, Lm_("stop", "--host", b, "idle").Code);
    }

    /// <summary>`lm start --drive` puts the disk on the host; `lm migrate --disk-path/--disk-base` moves it; bad drives and bases fail in one line.</summary>
    [Fact]
    public void Lm_start_with_a_drive_and_lm_migrate_move_the_disk()
    {
        string a = StartHost(), b = StartHost();
        string image = Path.Combine(_workDir, "g.img"), target = Path.Combine(_workDir, "moved.img"), tiny = Path.Combine(_workDir, "tiny.img");
        File.WriteAllBytes(image, DiskMigrationTests.InitialImage());
        File.WriteAllBytes(tiny, new byte[4096]);
        string elf = Path.Combine(Guests.Dir, "blk_forever.elf");
        var missing = Lm_("start", "--host", a, elf, "--name", "g", "--mem", "64M", "--drive", Path.Combine(_workDir, "nope.img"));
        Assert.NotEqual(0, missing.Code);
        Assert.Contains("nope.img does not exist", missing.Err);
        Assert.DoesNotContain('\n', missing.Err.Trim());
        Assert.Equal(0, Lm_("start", "--host", a, elf, "--name", "g", "--mem", "64M", "--drive", image).Code);
        using var console = new ConsoleClient(a, "g");
        console.WaitFor(t => t.Contains("blk: 1000 runs"), 30000);

        var refused = Lm_("migrate", "g", "--from", a, "--to", b, "--disk-path", target, "--disk-base", tiny);
        Assert.NotEqual(0, refused.Code);
        Assert.Contains("destination refused: disk mismatch: the source's disk is", refused.Out + refused.Err);

        var migrate = Lm_("migrate", "g", "--from", a, "--to", b, "--strategy", "log", "--disk-path", target, "--json");
        Assert.Equal(0, migrate.Code);
        using var json = JsonDocument.Parse(migrate.Out);
        var r = json.RootElement;
        Assert.Equal("copy", r.GetProperty("diskMode").GetString());
        ulong disk = ulong.Parse(r.GetProperty("bytesDisk").GetString()!);
        Assert.True(disk > 0);
        ulong parts = 0;
        foreach (var field in new[] { "bytesCheckpoint", "bytesLog", "bytesState", "bytesProtocol", "bytesDisk" }) parts += ulong.Parse(r.GetProperty(field).GetString()!);
        Assert.Equal(parts, ulong.Parse(r.GetProperty("bytesTotal").GetString()!));
        Assert.True(File.Exists(target));
        console.Follow();
        int seen = Regex.Matches(console.Text, @"(?m)^blk: \d+ runs").Count;
        console.WaitFor(t => Regex.Matches(t, @"(?m)^blk: \d+ runs").Count >= seen + 1, 30000);
        Assert.DoesNotContain("failed", console.Text);
        Assert.Equal(0, Lm_("stop", "--host", b, "g").Code);
    }

    /// <summary>
    /// `lm migrate` against a source host that is SIGSTOPped, before and during the migration, returns
    /// within its silence limit with one line saying what happened (no socket text, no hang).
    /// </summary>
    [Fact]
    public void Lm_migrate_against_a_stopped_source_returns_with_one_clear_line()
    {
        var (a, source) = StartHostProcess();
        string b = StartHost();
        Assert.Equal(0, Lm_("start", "--host", a, Path.Combine(Guests.Dir, "dirty_hotcold.elf"), "--name", "g", "--mem", "128M").Code);
        Thread.Sleep(500);
        try
        {
            // During: a slow link keeps the migration going while the source stops.
            var migration = Task.Run(() => Lm_("migrate", "g", "--from", a, "--to", b, "--strategy", "precopy", "--bandwidth", "20mbit", "--json"));
            Hosts.WaitUntil(() => { using var c = HostClient.Connect(a); return c.Status("g").Guests.Single().Status == GuestStatus.MigratingOut; }, 30000, "the migration to start");
            Thread.Sleep(300);
            Signal(source, "STOP");
            var t0 = Stopwatch.StartNew();
            var during = migration.Result;
            Assert.True(t0.Elapsed < TimeSpan.FromSeconds(20), $"lm migrate took {t0.Elapsed.TotalSeconds:F0} s to give up");
            Assert.NotEqual(0, during.Code);
            string line = during.Err.Trim();
            Assert.DoesNotContain('\n', line);
            Assert.Contains($"lost the source host {a}", line);
            Assert.Contains("has sent nothing for 10 s", line);
            Assert.Contains("outcome is unknown", line);

            // Before: it accepts (the kernel does) but never answers.
            var before = Lm_("migrate", "g", "--from", a, "--to", b);
            Assert.Equal(2, before.Code);
            line = before.Err.Trim();
            Assert.DoesNotContain('\n', line);
            Assert.Contains($"the host {a} accepted the connection but does not answer", line);
        }
        finally { Signal(source, "CONT"); }
    }

    [Fact]
    public void Lm_cli_reports_a_refused_connection_in_one_line()
    {
        var r = Lm_("status", "--host", "127.0.0.1:1");
        Assert.NotEqual(0, r.Code);
        Assert.StartsWith("lm: error: cannot connect to 127.0.0.1:1", r.Err.Trim());
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
