using System.Globalization;
using System.Text.Json;
using LiveMigration.Cli.Demo;
using LiveMigration.Cli.Hosting;
using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
using LiveMigration.Migration.Reports;

// Side-by-side comparison (issue 5): migrates idle_forever, compute_forever, dirty_forever (64 MiB),
// dirty_hotcold and kv under load with every strategy of ours between two in-process hosts on
// loopback under a 1 Gbit/s cap with a 128 MiB guest, and prints one table next to QEMU 7.2's rows
// measured by bench/QemuMigration/qemu_migrate.py (results/qemu-migration.json, same conditions).
// Usage: dotnet run -c Release --project bench/Compare [-- --guests idle_forever,kv --strategies auto,precopy --warmup 3]
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
string bandwidthText = Arg("--bandwidth", "1gbit");
double warmup = double.Parse(Arg("--warmup", "3"), CultureInfo.InvariantCulture);
ulong bandwidth = Bandwidth.Parse(bandwidthText);
var guests = Arg("--guests", "idle_forever,compute_forever,dirty_forever,dirty_hotcold,kv").Split(',');
var strategies = Arg("--strategies", "stopcopy,log,precopy,precopy+ac,postcopy,auto").Split(',');
string root = FindRoot();
const ulong Memory = 128UL << 20;
// "linux": our kernel and initramfs (guests/linux/build) booted under Debian's OpenSBI with 256 MiB, the kv
// server on its console under load; bench/QemuMigration/qemu_migrate.py --guests linux runs QEMU's side.
// "linux-noballoon": the same without virtio-balloon, so the kernel reports no free pages: next to
// "linux" it shows what free page reporting saves on the wire (both rows first churn 96 MiB: written, then freed).
const ulong LinuxMemory = 256UL << 20;
const double WorkWindowSeconds = 5.0;
bool verbose = args.Contains("--verbose");
// --timeline: the guest's speed every 100 ms from the migrate command to the end of the window (stderr), on whichever host runs it.
bool timeline = args.Contains("--timeline");
Action<string>? log = verbose ? m => Console.Error.WriteLine($"{DateTime.Now:HH:mm:ss.fff} {m}") : null;

var rows = new List<string[]>();
// Hosts are long-running processes: warm every strategy's code paths once, as `lm host` does at start.
MigrationWarmUp.Run();
Console.WriteLine($"comparison: {(Environment.GetEnvironmentVariable("LM_SHAPED_LINK") is { } shaped ? $"loopback shaped by {shaped} (bench/shaped-link.sh)" : "loopback")}, cap {bandwidthText} ({ByteSize.Human(bandwidth)}/s), {Memory >> 20} MiB guests, warm-up {warmup} s, downtime limit 10 ms, {Environment.ProcessorCount} cores");
Console.WriteLine("downtime = guest-visible, end to end: ours from the source pausing the guest to the destination resuming it (one monotonic clock: both hosts in this process; a row marked ~ had only the source's view, pause until Resumed arrived); " +
    "qemu from the source's STOP to the destination's RESUME QMP event (host timestamps). QEMU's own query-migrate downtime " +
    "(source only: vm stop until the source has sent everything) is in the notes as \"qemu-reported\"; * = only that figure was available");
foreach (var guest in guests)
{
    foreach (var strategy in strategies)
    {
        using var a = new GuestHost(new HostOptions { Log = log });
        using var b = new GuestHost(new HostOptions { Log = log });
        bool linux = guest is "linux" or "linux-noballoon";
        using (var client = HostClient.Connect(a.Address))
            if (linux) client.Start("g", LinuxGuest() with { Balloon = guest == "linux" }, LinuxMemory, "Image");
            else client.Start("g", BenchRepo.GuestElf(guest), Memory, guest);
        KvClient? kv = null;
        using var stopLoad = new CancellationTokenSource();
        Thread? load = null;
        string? loadError = null;
        if (guest == "kv" || linux)
        {
            kv = new KvClient(a.Address, "g");
            kv.WaitReady(linux ? 180_000 : KvClient.ReplyTimeoutMs);
            if (linux)
            {
                // 96 MiB written and freed: with the balloon the kernel reports them free (after its 2 s
                // delay) and no strategy sends them; without it they are 96 MiB of random data to move.
                string churned = kv.Request("churn 96");
                if (!churned.StartsWith("churned")) throw new InvalidOperationException($"churn answered '{churned}'");
                Thread.Sleep(3000);
            }
            load = new Thread(() => { try { kv.RunLoad(stopLoad.Token); } catch (Exception e) { loadError = e.Message; Console.Error.WriteLine($"kv load ({strategy}): {e.Message}"); } }) { IsBackground = true };
            load.Start();
        }
        // The guest's unmigrated speed: instructions retired over the warm-up after its first 0.5 s.
        Thread.Sleep(TimeSpan.FromSeconds(Math.Min(0.5, warmup / 2)));
        var (baseT, baseIcount) = Sample(a);
        Thread.Sleep(TimeSpan.FromSeconds(warmup - Math.Min(0.5, warmup / 2)));
        var (startT, startIcount) = Sample(a);
        double unmigratedRate = (startIcount - baseIcount) / Math.Max(startT - baseT, 1e-3);
        MigrationReport r;
        double migrateT = Now();
        using var timelineStop = new CancellationTokenSource();
        var timelineThread = timeline ? StartTimeline(a, b, migrateT, timelineStop.Token) : null;
        var wall = System.Diagnostics.Stopwatch.StartNew(); // Migrate returns once post-copy has sent (and had verified) every page
        using (var client = HostClient.Connect(a.Address))
            r = client.Migrate(new MigrateCommand
            {
                Name = "g", Target = b.Address, Strategy = Strategies.Parse(strategy.Replace("+ac", "")), AutoConverge = strategy.EndsWith("+ac"),
                BandwidthBytesPerSecond = bandwidth, DowntimeLimitMs = 10,
            });
        wall.Stop();
        // Guest work lost: what an unmigrated run would have retired over the migration window (at least
        // WorkWindowSeconds, as bench/QemuMigration measures QEMU's guests by their coarser progress counters),
        // less what this guest retired (source, then destination), as a share of the former.
        string lost = "-";
        if (r.Success && Now() < startT + WorkWindowSeconds) Thread.Sleep(TimeSpan.FromSeconds(startT + WorkWindowSeconds - Now()));
        double destinationRate = 0, window = WorkWindowSeconds;
        if (r.Success && b.FindInstance("g") is { } after)
        {
            var (endT, endIcount) = (Now(), after.Machine.Icount);
            window = endT - startT;
            // The same guest runs at a different speed on the other host (a memory-bound one by up to
            // a fifth, with its RAM laid out anew), so each host's share of the window is priced at
            // that host's own unmigrated speed: the source's before the pause, the destination's after.
            Thread.Sleep(TimeSpan.FromSeconds(1));
            destinationRate = (after.Machine.Icount - endIcount) / Math.Max(Now() - endT, 1e-3);
            double pauseT = migrateT + r.TotalSeconds - r.DowntimeSeconds;
            double expected = unmigratedRate * (pauseT - startT) + destinationRate * (endT - pauseT);
            if (expected > 0) lost = $"{Math.Max(0, 1 - (endIcount - startIcount) / expected) * 100:F1}";
        }
        timelineStop.Cancel();
        timelineThread?.Join();
        string kvNote = "";
        if (kv != null)
        {
            Thread.Sleep(300);
            stopLoad.Cancel();
            load!.Join();
            kvNote = kv.VerifyAll().Count == 0 ? $"kv {kv.SetsAcknowledged} SETs, none lost" : "kv: LOST SETS";
            if (loadError != null) kvNote += $", LOAD STOPPED: {loadError}"; // e.g. a wrong GET answer while the console moved
            kv.Dispose();
        }
        ulong total = r.BytesCheckpoint + r.BytesLog + r.BytesState + r.BytesProtocol + r.BytesPostcopy;
        bool postcopy = r.Strategy == Strategy.Postcopy || r.Switches.Any(s => s.To == Strategy.Postcopy) || r.PostcopyPages > 0;
        bool converged = postcopy
            // Post-copy always "converges" on the switchover; what matters is that every manifest page got there.
            ? r.Success && r.PostcopyPages > 0 && r.PostcopyVerifiedPages == r.PostcopyPages
            : r.Success && !r.Error.Contains("did not converge") && !r.ConvergedBy.StartsWith("iteration cap") && !r.ConvergedBy.StartsWith("no progress");
        var notes = new List<string>();
        var switches = r.Switches.Where(s => s.HasFrom).ToList(); // the first entry is the start (no from)
        if (switches.Count > 0) notes.Add(string.Join("; ", switches.Select(s => $"{Strategies.Name(s.From)}->{Strategies.Name(s.To)} at {s.T:F1} s")));
        if (r.ConvergedBy != "") notes.Add($"{r.PrecopyRounds} rounds, {Short(r.ConvergedBy)}");
        if (r.MaxThrottle > 0) notes.Add($"throttle max {r.MaxThrottle:P0}");
        // The guest's time held back as the engine itself measures it (no instruction-rate noise):
        // throttled at the source, paused, waiting for requested post-copy pages at the destination.
        if (r.Success)
        {
            double held = r.ThrottledSeconds + r.DowntimeSeconds + r.PostcopyGuestWaitSeconds;
            notes.Add($"held back {held * 1000:F0} ms = {held / window:P1} of {window:F1} s (throttle {r.ThrottledSeconds * 1000:F0}, paused {r.DowntimeSeconds * 1000:F0}, post-copy waits {r.PostcopyGuestWaitSeconds * 1000:F0})");
        }
        if (destinationRate > 0 && Math.Abs(destinationRate / unmigratedRate - 1) > 0.05)
            notes.Add($"unmigrated speed {unmigratedRate / 1e6:F0} MIPS here, {destinationRate / 1e6:F0} there");
        if (postcopy)
            notes.Add($"post-copy {r.PostcopyPages} pages ({r.PostcopyRequestedPages} requested, {r.PostcopyPrepagedPages} pre-paged), " +
                $"{r.PostcopyVerifiedPages} hash-verified, all sent by {wall.Elapsed.TotalMilliseconds:F0} ms");
        if (kvNote != "") notes.Add(kvNote);
        if (!r.Success) notes.Add("FAILED: " + r.Error);
        else if (r.DigestVerified) notes.Add(postcopy ? "device digest ok" : "digest ok");
        rows.Add([guest, "ours", strategy, $"{r.DowntimeSeconds * 1000:F1}{(r.DowntimeClock == "shared clock" ? "" : "~")}", $"{r.TotalSeconds * 1000:F0}", Bytes(total), lost, converged ? "yes" : "no", string.Join(", ", notes)]);
        Console.WriteLine("  " + string.Join(" | ", rows[^1]));
    }
    foreach (var q in QemuRows(guest)) rows.Add(q);
}

string[] head = ["guest", "engine", "strategy", "downtime ms", "total ms", "bytes", "work lost %", "converged", "notes"];
var widths = head.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
string Line(string[] cells) => "| " + string.Join(" | ", cells.Select((x, i) => x.PadRight(widths[i]))) + " |";
Console.WriteLine();
Console.WriteLine(Line(head));
Console.WriteLine("|" + string.Join("|", widths.Select(w => new string('-', w + 2))) + "|");
foreach (var row in rows) Console.WriteLine(Line(row));
return 0;

IEnumerable<string[]> QemuRows(string guest)
{
    string path = Path.Combine(root, "bench", "QemuMigration", "results", "qemu-migration.json");
    if (!File.Exists(path)) yield break;
    using var doc = JsonDocument.Parse(File.ReadAllText(path));
    foreach (var row in doc.RootElement.GetProperty("rows").EnumerateArray())
    {
        if (row.GetProperty("guest").GetString() != guest) continue;
        bool converged = row.GetProperty("converged").GetBoolean();
        double? Num(string name) => row.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
        string source = row.TryGetProperty("downtime_source", out var ds) && ds.ValueKind == JsonValueKind.String ? ds.GetString()! : "qemu-reported";
        // JSON from before the end-to-end measurement: downtime_ms is QEMU's own figure.
        double? reported = row.TryGetProperty("downtime_source", out _) ? Num("qemu_reported_downtime_ms") : Num("downtime_ms");
        double? downtime = Num("downtime_ms");
        string downtimeText = downtime is { } d ? d.ToString("F1") + (source == "events" ? "" : "*") : "-";
        var notes = new List<string>();
        if (converged && reported is { } rep)
            notes.Add(row.TryGetProperty("qemu_reported_downtime_suspect", out var sus) && sus.GetBoolean() || rep > Num("total_time_ms")
                ? $"qemu-reported {rep:F0} ms (bogus)" : $"qemu-reported {rep:F0} ms");
        if (converged && row.TryGetProperty("postcopy_started", out var ps) && ps.ValueKind == JsonValueKind.False && row.GetProperty("strategy").GetString() == "postcopy")
            notes.Add("post-copy not entered: pre-copy converged in pass 1");
        if (row.TryGetProperty("notes", out var n))
            foreach (var note in n.EnumerateArray().Select(x => x.GetString()!.Split('\n')[0]))
                if (!note.StartsWith("QEMU-reported downtime") && !note.StartsWith("src.stderr") && !note.StartsWith("dst.stderr")) notes.Add(note);
        yield return [guest, "qemu-7.2", row.GetProperty("strategy").GetString()!, downtimeText, row.GetProperty("total_time_ms").GetDouble().ToString("F0"),
            Bytes((ulong)row.GetProperty("transferred_bytes").GetInt64()), Num("work_lost_percent") is { } wl ? wl.ToString("F1") : "-", converged ? "yes" : "no", string.Join(", ", notes)];
    }
}

LiveMigration.Guest.Platform.BootImages LinuxGuest()
{
    string build = Path.Combine(root, "guests", "linux", "build");
    return new LiveMigration.Guest.Platform.BootImages
    {
        Firmware = File.ReadAllBytes("/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin"), // Debian's opensbi, as QEMU's side uses
        Kernel = File.ReadAllBytes(Path.Combine(build, "Image")), Initrd = File.ReadAllBytes(Path.Combine(build, "initramfs.cpio")),
        CommandLine = "console=ttyS0 earlycon",
    };
}
static double Now() => System.Diagnostics.Stopwatch.GetTimestamp() / (double)System.Diagnostics.Stopwatch.Frequency;

/// <summary>(seconds, icount) of the guest on <paramref name="host"/>, read while it runs (a 64-bit read: whole).</summary>
static (double T, ulong Icount) Sample(GuestHost host) => (Now(), host.FindInstance("g")!.Machine.Icount);

// Prints "t ms: MIPS host" lines; the icount carries over the switchover (the destination continues the source's count).
static Thread StartTimeline(GuestHost a, GuestHost b, double t0, CancellationToken stop)
{
    var t = new Thread(() =>
    {
        double lastT = Now();
        ulong last = 0;
        while (!stop.IsCancellationRequested)
        {
            var (host, g) = b.FindInstance("g") is { State: GuestStatus.Running } onB ? ("B", onB) : ("A", a.FindInstance("g"));
            if (g == null) { Thread.Sleep(10); continue; }
            double now = Now();
            ulong icount = g.Machine.Icount;
            if (last != 0) Console.Error.WriteLine($"  {(now - t0) * 1000,6:F0} ms: {(icount - last) / (now - lastT) / 1e6,6:F0} MIPS on {host}");
            (lastT, last) = (now, icount);
            Thread.Sleep(100);
        }
    }) { IsBackground = true };
    t.Start();
    return t;
}

static string Short(string s)
{
    int colon = s.IndexOf(':');
    return colon > 0 ? s[..colon] : s.Length > 48 ? s[..48] : s;
}
static string Bytes(ulong b) => ByteSize.Human(b);

string Arg(string name, string fallback) => BenchRepo.Arg(args, name, fallback);

static string FindRoot() => BenchRepo.Root;
