using System.Diagnostics;
using System.Globalization;
using LiveMigration.Migration.Demo;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Reports;

// Migrates idle, compute, dirty and kv-under-load guests with both strategies between two hosts on
// loopback with a 1 Gbit/s cap, and prints downtime, total time, bytes and throttle.
// Usage: dotnet run -c Release --project bench/MigrationBench [-- --bandwidth 1gbit --warmup 2 --guests idle,compute,dirty,kv]
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
string bandwidthText = Arg("--bandwidth", "1gbit");
double warmup = double.Parse(Arg("--warmup", "2"), CultureInfo.InvariantCulture);
var selected = Arg("--guests", "idle,compute,dirty,kv").Split(',');
ulong bandwidth = Rate.Parse(bandwidthText);
string dir = FindGuests();

var cases = new (string Label, string Elf, ulong Mem, bool Kv)[]
{
    ("idle", "idle_forever", 128UL << 20, false),
    ("compute", "compute_forever", 128UL << 20, false),
    ("dirty", "dirty_forever", 128UL << 20, false),
    ("kv", "kv", 128UL << 20, true),
};
var rows = new List<string[]>();
bool verbose = args.Contains("--verbose");
Action<string>? log = verbose ? m => Console.Error.WriteLine($"{DateTime.Now:HH:mm:ss.fff} {m}") : null;
// Hosts are long-running processes: warm every strategy's code paths once, as `lm host` does at start.
MigrationWarmUp.Run();
Console.WriteLine($"migration benchmark: loopback, bandwidth cap {bandwidthText} ({ByteSize.Human(bandwidth)}/s), warm-up {warmup} s, {Environment.ProcessorCount} cores");
foreach (var c in cases.Where(c => selected.Contains(c.Label)))
    foreach (var strategy in new[] { "stopcopy", "log" })
    {
        using var a = new GuestHost(new HostOptions { Log = log });
        using var b = new GuestHost(new HostOptions { Log = log });
        using (var client = HostClient.Connect(a.Address)) client.Start("g", File.ReadAllBytes(Path.Combine(dir, c.Elf + ".elf")), c.Mem, c.Elf);
        KvClient? kv = null;
        using var stopLoad = new CancellationTokenSource();
        Thread? load = null;
        if (c.Kv)
        {
            kv = new KvClient(a.Address, "g");
            kv.WaitReady();
            load = new Thread(() => { try { kv.RunLoad(stopLoad.Token); } catch (Exception e) { Console.Error.WriteLine($"kv load: {e.Message}"); } }) { IsBackground = true };
            load.Start();
        }
        Thread.Sleep(TimeSpan.FromSeconds(warmup));
        MigrationReport r;
        var sw = Stopwatch.StartNew();
        using (var client = HostClient.Connect(a.Address))
            r = client.Migrate(new MigrateCommand { Name = "g", Target = b.Address, Strategy = strategy, BandwidthBytesPerSecond = bandwidth, DowntimeLimitMs = 10 });
        string lost = "";
        if (kv != null)
        {
            Thread.Sleep(300);
            stopLoad.Cancel();
            load!.Join();
            lost = kv.VerifyAll().Count == 0 ? $", kv: {kv.SetsAcknowledged} SETs, none lost" : ", kv: LOST SETS";
            kv.Dispose();
        }
        ulong total = r.BytesCheckpoint + r.BytesLog + r.BytesState + r.BytesProtocol;
        rows.Add([c.Label, strategy, r.Success ? "ok" : "FAILED", $"{r.DowntimeSeconds * 1000:F1}", $"{r.TotalSeconds:F2}",
            ByteSize.Human(total), ByteSize.Human(r.BytesCheckpoint), ByteSize.Human(r.BytesLog), $"{r.MaxThrottle:P0}/{r.MeanThrottle:P0}",
            r.DigestVerified ? $"{r.Digest:x16}" : "-"]);
        Console.WriteLine($"  {c.Label,-8} {strategy,-8} {(r.Success ? "ok" : "FAILED: " + r.Error)} downtime {r.DowntimeSeconds * 1000:F1} ms, total {r.TotalSeconds:F2} s, {ByteSize.Human(total)}{lost}{(r.Success && r.Error != "" ? " (" + r.Error + ")" : "")}");
    }

string[] head = ["guest", "strategy", "result", "downtime ms", "total s", "bytes", "checkpoint", "log", "throttle max/mean", "verified digest"];
var widths = head.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
string Line(string[] cells) => "| " + string.Join(" | ", cells.Select((x, i) => x.PadRight(widths[i]))) + " |";
Console.WriteLine();
Console.WriteLine(Line(head));
Console.WriteLine("|" + string.Join("|", widths.Select(w => new string('-', w + 2))) + "|");
foreach (var row in rows) Console.WriteLine(Line(row));
return 0;

string Arg(string name, string fallback) => BenchRepo.Arg(args, name, fallback);

static string FindGuests() => BenchRepo.Guests;
