using System.CommandLine;
using LiveMigration.Guest.Platform;
using System.Diagnostics;
using LiveMigration.Cli.Demo;
using LiveMigration.Cli.Hosting;
using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
using LiveMigration.Migration.Reports;
using LiveMigration.Operator.Plots;
using Spectre.Console;

namespace LiveMigration.Cli.Commands;

/// <summary>
/// `lm demo`: two hosts on loopback, the kv guest on the first, a client writing and reading keys
/// through the guest's console, a live migration to the second host under load, the report, and
/// the proof that every acknowledged SET is still there.
/// </summary>
public static class DemoCommand
{
    public static Command Create()
    {
        var strategy = new Option<string>("--strategy") { Description = Strategies.Help, DefaultValueFactory = _ => "auto" };
        strategy.AcceptOnlyFromAmong([.. Strategies.Names]);
        var guest = new Option<FileInfo?>("--guest") { Description = "kv guest ELF (default: guests/build/kv.elf)" };
        var bandwidth = new Option<string>("--bandwidth") { Description = "rate limit (default 1gbit)", DefaultValueFactory = _ => "1gbit" };
        var command = new Command("demo", "Migrate a kv server under load between two local hosts and prove nothing was lost");
        command.Options.Add(strategy);
        command.Options.Add(guest);
        command.Options.Add(bandwidth);
        var verbose = new Option<bool>("--verbose") { Description = "print the hosts' event log to stderr" };
        command.Options.Add(verbose);
        var timeline = new Option<string?>("--timeline") { Description = "write the migration's timeline plot to FILE (.png or .svg)" };
        command.Options.Add(timeline);
        var linux = new Option<bool>("--linux") { Description = "migrate the Linux guest (guests/linux/build: Image and initramfs, the kv server as a Linux program) instead of the bare-metal kv" };
        command.Options.Add(linux);
        var kernel = new KernelBootOptions();
        kernel.AddTo(command);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            var boot = kernel.Read(parse);
            if (boot == null && parse.GetValue(linux))
                boot = KernelBootOptions.Read(FindRepoFile("guests/linux/build/Image", "run guests/linux/build-kernel.sh or pass --kernel"),
                    FindRepoFile("guests/linux/build/initramfs.cpio", "run guests/linux/build-initramfs.sh or pass --kernel/--initrd"), "console=ttyS0 earlycon", null);
            if (boot != null && parse.GetValue(guest) != null) throw new FormatException("give one of: --guest ELF, --linux, --kernel Image");
            return Run(parse.GetValue(strategy)!, parse.GetValue(guest), boot, Bandwidth.Parse(parse.GetValue(bandwidth)!), parse.GetValue(verbose), parse.GetValue(timeline));
        }));
        return command;
    }

    /// <summary>A file of the repository (the demo runs from a checkout), looked up from the working and the binary's directory.</summary>
    private static string FindRepoFile(string relative, string hint)
    {
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
            for (var d = new DirectoryInfo(start); d != null; d = d.Parent)
            {
                string p = Path.Combine(d.FullName, relative);
                if (File.Exists(p)) return p;
            }
        throw new FileNotFoundException($"{relative} not found: {hint}");
    }

    private static int Run(string strategy, FileInfo? guest, BootImages? boot, ulong bandwidth, bool verbose, string? timeline)
    {
        if (timeline != null) TimelinePlot.FormatOf(timeline);
        string? elfPath = boot != null ? null : guest?.FullName ?? FindRepoFile("guests/build/kv.elf", "run `make -C guests` or pass --guest");
        Action<string>? log = verbose ? m => Console.Error.WriteLine($"{DateTime.Now:HH:mm:ss.fff} {m}") : null;
        MigrationWarmUp.Run(log); // as a long-running host would be: no first-use costs in the downtime
        using var a = new GuestHost(new HostOptions { Log = log });
        using var b = new GuestHost(new HostOptions { Log = log });
        AnsiConsole.MarkupLine($"[bold]lm demo[/]: host A on {a.Address}, host B on {b.Address}");

        using (var c = HostClient.Connect(a.Address))
        {
            string console = boot != null ? c.Start("kv", boot, 256UL << 20, "Image") : c.Start("kv", File.ReadAllBytes(elfPath!), 64UL << 20, "kv");
            AnsiConsole.MarkupLine(boot != null ? $"booting Linux on A (256 MiB); its console is tcp:{console}" : $"started the kv guest on A; its console is tcp:{console}");
        }
        using var client = new KvClient(a.Address, "kv");
        client.WaitReady(boot != null ? 120_000 : KvClient.ReplyTimeoutMs);
        using var stop = new CancellationTokenSource();
        Exception? loadError = null;
        var load = new Thread(() =>
        {
            try { client.RunLoad(stop.Token); }
            catch (Exception e) { loadError = e; }
        }) { IsBackground = true };
        load.Start();
        var warm = Stopwatch.StartNew();
        while (warm.ElapsedMilliseconds < 1000) Thread.Sleep(50);
        int before = client.Acknowledged.Count;
        AnsiConsole.MarkupLine($"client running: {client.SetsAcknowledged} SETs acknowledged in the first second; migrating A -> B with [bold]{strategy}[/]");

        MigrationReport report;
        using (var c = HostClient.Connect(a.Address))
            report = MigrateCommands.RunWithProgress(c, new MigrateCommand
            {
                Name = "kv", Target = b.Address, Strategy = Strategies.Parse(strategy), BandwidthBytesPerSecond = bandwidth, DowntimeLimitMs = 10,
            }, showProgress: true);
        if (timeline != null) TimelinePlot.Write(report, timeline);
        MigrateCommands.PrintReport(report, timeline);

        Thread.Sleep(1000); // the client keeps going on the destination
        stop.Cancel();
        load.Join();
        if (loadError != null) { AnsiConsole.MarkupLine($"[red]client error: {Markup.Escape(loadError.Message)}[/]"); return 1; }
        if (!report.Success) return 1;

        var missing = client.VerifyAll();
        string where = HostClient.Locate(a.Address, "kv").Host;
        var t = new Table().Border(TableBorder.Rounded).HideHeaders().AddColumns("", "");
        t.Title("[bold]did the client lose anything?[/]");
        t.AddRow("SETs acknowledged", $"{client.SetsAcknowledged:N0} ({client.Acknowledged.Count} distinct keys)");
        t.AddRow("GETs checked during the run", $"{client.GetsChecked:N0}");
        t.AddRow("console reconnects / retried requests", $"{client.Reconnects} / {client.Retries}");
        t.AddRow("guest now runs on", where == b.Address ? $"B ({where})" : where);
        t.AddRow("acknowledged SETs read back after migration", missing.Count == 0 ? $"[green]all {client.Acknowledged.Count} keys hold their last acknowledged value[/]" : $"[red]{missing.Count} wrong: {Markup.Escape(string.Join(", ", missing.Take(10)))}[/]");
        AnsiConsole.Write(t);
        return missing.Count == 0 && where == b.Address ? 0 : 1;
    }
}
