using System.Diagnostics;
using System.Globalization;
using LiveMigration.Cli.Demo;
using LiveMigration.Cli.Hosting;
using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
using LiveMigration.Migration.Reports;

// Migrates idle, compute, dirty and kv-under-load guests with both strategies between two hosts on
// loopback with a 1 Gbit/s cap, and prints downtime, total time, bytes and throttle.
// Usage: dotnet run -c Release --project bench/MigrationBench [-- --bandwidth 1gbit --warmup 2 --guests idle,compute,dirty,kv --strategies stopcopy,log --tls off|on|both --runs 1 --mem 128M]
// --tls on runs the hosts with mutual TLS 1.3 (a fleet made for the run); both runs every case without and with it,
// alternating plain and TLS run by run (--runs N times), and ends with medians side by side and TLS's cost.
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
string bandwidthText = Arg("--bandwidth", "1gbit");
double warmup = double.Parse(Arg("--warmup", "2"), CultureInfo.InvariantCulture);
var selected = Arg("--guests", "idle,compute,dirty,kv").Split(',');
var strategies = Arg("--strategies", "stopcopy,log").Split(',');
// Guest memory: the dirty guest's checkpoint is ~0.43 of it, so 1G makes a transfer of a few seconds, long enough to time.
ulong mem = LiveMigration.Guest.MachineConfig.ParseSize(Arg("--mem", "128M"));
string tlsMode = Arg("--tls", "off");
int runs = int.Parse(Arg("--runs", "1"), CultureInfo.InvariantCulture);
if (runs < 1) throw new FormatException("--runs takes a positive count");
var samples = new Dictionary<(string Guest, string Strategy, bool Tls), List<(double Rate, double TransferRate, double SetupMs, double DowntimeMs)>>();
bool[] tlsRuns = tlsMode switch { "off" => [false], "on" => [true], "both" => [false, true], _ => throw new FormatException("--tls takes off, on or both") };
string? fleet = null;
if (tlsRuns.Contains(true))
{
    fleet = Path.Combine(Path.GetTempPath(), $"lm-bench-fleet-{Environment.ProcessId}");
    LiveMigration.Migration.Transport.Tls.CertificateAuthority.Init(fleet, "op");
    foreach (var h in new[] { "a", "b" }) LiveMigration.Migration.Transport.Tls.CertificateAuthority.Issue(fleet, LiveMigration.Migration.Transport.Tls.Role.Host, h, [System.Net.IPAddress.Loopback]);
}
LiveMigration.Migration.Transport.Tls.TlsIdentity? Identity(bool on, string who) =>
    on ? LiveMigration.Migration.Transport.Tls.TlsIdentity.Load(who == "op" ? fleet! : Path.Combine(fleet!, who)) : null;
ulong bandwidth = Bandwidth.Parse(bandwidthText);

var cases = new (string Label, string Elf, ulong Mem, bool Kv)[]
{
    ("idle", "idle_forever", mem, false),
    ("compute", "compute_forever", mem, false),
    ("dirty", "dirty_forever", mem, false),
    ("kv", "kv", mem, true),
};
if (selected.FirstOrDefault(g => cases.All(c => c.Label != g)) is { } unknown)
{
    Console.Error.WriteLine($"bench: unknown guest '{unknown}' in --guests (known: {string.Join(", ", cases.Select(c => c.Label))})");
    return 2;
}
var rows = new List<string[]>();
bool verbose = args.Contains("--verbose");
Action<string>? log = verbose ? m => Console.Error.WriteLine($"{DateTime.Now:HH:mm:ss.fff} {m}") : null;
// Hosts are long-running processes: warm every strategy's code paths once, as `lm host` does at start.
MigrationWarmUp.Run();
Console.WriteLine($"migration benchmark: loopback, bandwidth cap {bandwidthText} ({ByteSize.Human(bandwidth)}/s), warm-up {warmup} s, {Environment.ProcessorCount} cores");
foreach (var c in cases.Where(c => selected.Contains(c.Label)))
    foreach (var strategy in strategies)
    for (int run = 0; run < runs; run++)
    foreach (bool tls in tlsRuns)
    {
        using var op = Identity(tls, "op");
        using var a = new GuestHost(new HostOptions { Log = log, Tls = Identity(tls, "a") });
        using var b = new GuestHost(new HostOptions { Log = log, Tls = Identity(tls, "b") });
        using (var client = HostClient.Connect(a.Address, op)) client.Start("g", BenchRepo.GuestElf(c.Elf), c.Mem, c.Elf);
        KvClient? kv = null;
        using var stopLoad = new CancellationTokenSource();
        Thread? load = null;
        if (c.Kv)
        {
            kv = new KvClient(a.Address, "g", op);
            kv.WaitReady();
            load = new Thread(() => { try { kv.RunLoad(stopLoad.Token); } catch (Exception e) { Console.Error.WriteLine($"kv load: {e.Message}"); } }) { IsBackground = true };
            load.Start();
        }
        Thread.Sleep(TimeSpan.FromSeconds(warmup));
        MigrationReport r;
        var sw = Stopwatch.StartNew();
        using (var client = HostClient.Connect(a.Address, op))
            r = client.Migrate(new MigrateCommand { Name = "g", Target = b.Address, Strategy = Strategies.Parse(strategy), BandwidthBytesPerSecond = bandwidth, DowntimeLimitMs = 10 });
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
        double wire = total + r.BytesPostcopy;
        double throughput = r.TotalSeconds > 0 ? wire / r.TotalSeconds : 0;
        // The link's rate once connected: the TLS handshake is a fixed cost paid before any byte moves, shown apart.
        double transfer = r.TotalSeconds > r.SetupSeconds ? wire / (r.TotalSeconds - r.SetupSeconds) : 0;
        if (r.Success)
        {
            if (!samples.TryGetValue((c.Label, strategy, tls), out var list)) samples[(c.Label, strategy, tls)] = list = [];
            list.Add((throughput, transfer, r.SetupSeconds * 1000, r.DowntimeSeconds * 1000));
        }
        rows.Add([c.Label, strategy, tls ? "TLS" : "plain", ByteSize.Human(throughput) + "/s", ByteSize.Human(r.RawBytesCheckpoint / Math.Max(r.CheckpointSeconds, 1e-9)) + "/s", r.Success ? "ok" : "FAILED", $"{r.DowntimeSeconds * 1000:F1}", $"{r.TotalSeconds:F2}",
            ByteSize.Human(total), ByteSize.Human(r.BytesCheckpoint), ByteSize.Human(r.BytesLog), $"{r.MaxThrottle:P0}/{r.MeanThrottle:P0}",
            r.DigestVerified ? $"{r.Digest:x16}" : "-"]);
        Console.WriteLine($"  {c.Label,-8} {strategy,-8} {(tls ? "TLS" : "plain"),-5} {(r.Success ? "ok" : "FAILED: " + r.Error)} downtime {r.DowntimeSeconds * 1000:F1} ms, total {r.TotalSeconds:F2} s, {ByteSize.Human(total)}{lost}{(r.Success && r.Error != "" ? " (" + r.Error + ")" : "")}");
    }

string[] head = ["guest", "strategy", "link", "wire rate", "checkpoint rate (raw)", "result", "downtime ms", "total s", "bytes", "checkpoint", "log", "throttle max/mean", "verified digest"];
var widths = head.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
string Line(string[] cells) => "| " + string.Join(" | ", cells.Select((x, i) => x.PadRight(widths[i]))) + " |";
Console.WriteLine();
Console.WriteLine(Line(head));
Console.WriteLine("|" + string.Join("|", widths.Select(w => new string('-', w + 2))) + "|");
foreach (var row in rows) Console.WriteLine(Line(row));
if (tlsRuns.Length == 2)
{
    // Medians of the runs, plain next to TLS. Wire rate: every byte on the wire over the migration's total time;
    // transfer rate: the same bytes over the time after setup (connection, TLS handshake, setup exchange), whose cost is its own column.
    Console.WriteLine();
    Console.WriteLine($"TLS cost, medians of {runs} runs each (plain and TLS alternating)");
    Console.WriteLine("| guest | strategy | plain wire rate | TLS wire rate | wire-rate cost | plain transfer rate | TLS transfer rate | throughput cost | setup cost ms | plain downtime ms | TLS downtime ms | downtime cost ms |");
    Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|");
    foreach (var c in cases.Where(c => selected.Contains(c.Label)))
        foreach (var strategy in strategies)
        {
            if (!samples.TryGetValue((c.Label, strategy, false), out var plain) || !samples.TryGetValue((c.Label, strategy, true), out var secure)) continue;
            double pr = Median(plain.Select(x => x.Rate)), tr = Median(secure.Select(x => x.Rate));
            double px = Median(plain.Select(x => x.TransferRate)), tx = Median(secure.Select(x => x.TransferRate));
            double setup = Median(secure.Select(x => x.SetupMs)) - Median(plain.Select(x => x.SetupMs));
            double pd = Median(plain.Select(x => x.DowntimeMs)), td = Median(secure.Select(x => x.DowntimeMs));
            Console.WriteLine($"| {c.Label} | {strategy} | {ByteSize.Human(pr)}/s | {ByteSize.Human(tr)}/s | {(1 - tr / pr) * 100:+0.0;-0.0} % | {ByteSize.Human(px)}/s | {ByteSize.Human(tx)}/s | {(1 - tx / px) * 100:+0.0;-0.0} % | {setup:+0.0;-0.0} | {pd:F2} | {td:F2} | {td - pd:+0.00;-0.00} |");
        }
}
return 0;

static double Median(IEnumerable<double> values)
{
    var v = values.OrderBy(x => x).ToArray();
    return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
}

string Arg(string name, string fallback) => BenchRepo.Arg(args, name, fallback);

