// Bytes on the wire for a guest with a virtio-blk disk, migrated between two hosts on loopback
// without shared storage (issue 13's figure): (a) a fresh destination, (b) a destination holding
// an older copy of the image that differs in 1 % of its blocks, (c) as (b) with the disk workload
// (guests/blk.c, forever) writing during the migration; each with log shipping, pre-copy and
// post-copy, and in case (c) pre-copy once more sending the disk only at its first pass and the
// pause (before the per-round block dirty map) to show what the rounds take off the pause.
//   dotnet run -c Release --project bench/DiskBench [-- --image-mib 64 --filled 20]
// Columns: "pre-GO" data blocks sent before the resume, "after GO" post-copy blocks (requested by
// guest disk requests in brackets), "at pause" disk blocks sent with the guest paused (pre-copy:
// the last pass), "time" until the resume, "done" until the source was released (post-copy: every
// page and block verified).
// With --qemu FILE (the JSON bench/QemuMigration/qemu_block_migrate.py writes: QEMU 7.2's block
// migration, `migrate -b`, on the same kind of image) it ends with ours next to QEMU's per case:
// bytes on the wire, total time, downtime; and the guest disk throughput both measured.
// The image has --filled percent of its blocks random (the rest zero). Case (a) and (b) run
// idle_forever, which never touches its disk, so they measure the image transfer alone.
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Recorder.Disk;

int imageMib = Arg("--image-mib", 64), filled = Arg("--filled", 20);
string? qemuJson = args.SkipWhile(a => a != "--qemu").Skip(1).FirstOrDefault();
bool verbose = args.Contains("--verbose"); // the hosts' logs on stderr (where a downtime goes)
var ours = new List<(string Case, string Strategy, ulong Bytes, double Seconds, double Downtime)>();
string dir = Directory.CreateTempSubdirectory("lm-diskbench-").FullName;
try
{
    int blocks = imageMib << 8;
    var image = new byte[(long)imageMib << 20];
    var rng = new Random(13);
    for (int b = 0; b < blocks; b++) if (rng.Next(100) < filled) rng.NextBytes(image.AsSpan(b * 4096, 4096));
    var older = (byte[])image.Clone();
    for (int i = 0; i < blocks / 100; i++) rng.NextBytes(older.AsSpan(rng.Next(blocks) * 4096, 4096));
    string olderPath = Path.Combine(dir, "older.img");
    File.WriteAllBytes(olderPath, older);
    long nonZero = Enumerable.Range(0, blocks).Count(b => image.AsSpan(b * 4096, 4096).ContainsAnyExcept((byte)0));
    Console.WriteLine($"disk bench: {imageMib} MiB image ({blocks} blocks, {nonZero} non-zero), 64 MiB guest RAM, loopback, no shared storage");
    Console.WriteLine($"{"case",-34} {"strategy",-23} {"total",10} {"disk",10} {"RAM",10} {"log",9} {"pre-GO",7} {"zero",5} {"after GO",13} {"at pause",8} {"disk/image",10} {"time",7} {"done",7} {"downtime",9}");
    var runs = new[] { ("(a) fresh destination", "idle_forever", false), ("(b) base differs in 1 % of blocks", "idle_forever", true), ("(c) (b) + disk workload writing", "blk_forever", true) };
    // The first pass (case (a) only) warms the JIT up on the switchover's code paths: no rows.
    foreach (var (pass, (label, guest, withBase)) in runs.Take(1).Select(r => (0, r)).Concat(runs.Select(r => (1, r))))
        foreach (var (strategy, everyRound) in new[] { (Strategy.Log, true), (Strategy.Precopy, true), (Strategy.Postcopy, true), (Strategy.Precopy, false) })
        {
            bool warmUp = pass == 0;
            if (!everyRound && guest != "blk_forever") continue; // the comparison only means something with the disk written
            string source = Path.Combine(dir, "source.img"), target = Path.Combine(dir, "target.img");
            File.WriteAllBytes(source, image);
            File.Delete(target);
            Action<string>? log = verbose && !warmUp ? m => Console.Error.WriteLine(m) : null;
            using var a = new GuestHost(new HostOptions { DiskDir = dir, PrecopyDiskEveryRound = everyRound, Log = log });
            using var b = new GuestHost(new HostOptions { DiskDir = dir, Log = log });
            using (var c = HostClient.Connect(a.Address)) c.Start("g", File.ReadAllBytes(LiveMigration.Tests.Shared.RepoPaths.Guest(guest)), 64 << 20, guest, new DriveSpec(source, false));
            Thread.Sleep(guest == "blk_forever" ? 1500 : 300); // the workload has written for a while
            using var hc = HostClient.Connect(a.Address);
            var r = hc.Migrate(new MigrateCommand { Name = "g", Target = b.Address, Strategy = strategy, DowntimeLimitMs = 50, DiskPath = target, DiskBase = withBase ? olderPath : "" });
            if (warmUp) continue;
            string name = Name(strategy) + (everyRound ? "" : " (disk at pause)");
            if (!r.Success) { Console.WriteLine($"{label,-34} {name,-23} failed: {r.Error}"); continue; }
            ulong total = r.BytesCheckpoint + r.BytesLog + r.BytesState + r.BytesProtocol + r.BytesPostcopy + r.BytesDisk;
            ulong atPause = strategy == Strategy.Precopy && r.DiskBlocksPerPass.Count > 0 ? r.DiskBlocksPerPass[^1] : strategy == Strategy.Log ? (r.DiskBlocksPerPass.Count > 1 ? r.DiskBlocksPerPass[^1] : 0) : r.DiskBlocksSent + r.DiskZeroBlocks;
            string afterGo = strategy == Strategy.Postcopy ? $"{r.PostcopyDiskBlocks} ({r.PostcopyRequestedDiskBlocks})" : "-";
            double done = r.PostcopyDoneSeconds > 0 ? r.PostcopyDoneSeconds : r.TotalSeconds;
            if (everyRound) ours.Add((label, Name(strategy), total, done, r.DowntimeSeconds));
            Console.WriteLine($"{label,-34} {name,-23} {Human(total),10} {Human(r.BytesDisk),10} {Human(r.BytesCheckpoint + r.BytesPostcopy),10} {Human(r.BytesLog),9} {r.DiskBlocksSent,7} {r.DiskZeroBlocks,5} {afterGo,13} {atPause,8} {100.0 * r.BytesDisk / image.Length,9:F2}% {r.TotalSeconds * 1000,5:F0}ms {done * 1000,5:F0}ms {r.DowntimeSeconds * 1000,7:F1}ms");
        }
    if (qemuJson != null) Compare(qemuJson, ours);
}
finally { Directory.Delete(dir, true); }

// Ours next to QEMU 7.2's block migration, case by case; then the guest's disk throughput under both.
static void Compare(string path, List<(string Case, string Strategy, ulong Bytes, double Seconds, double Downtime)> ours)
{
    using var json = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
    var root = json.RootElement;
    Console.WriteLine();
    Console.WriteLine($"against {root.GetProperty("environment").GetProperty("qemu").GetString()} block migration (migrate -b, zero-blocks), {path}:");
    Console.WriteLine($"{"case",-34} {"engine",-22} {"wire bytes",12} {"total time",11} {"downtime",9}");
    foreach (var row in root.GetProperty("rows").EnumerateArray())
    {
        string c = row.GetProperty("case").GetString()!;
        foreach (var o in ours.Where(o => o.Case == c))
            Console.WriteLine($"{c,-34} {"ours " + o.Strategy,-22} {Human(o.Bytes),12} {o.Seconds * 1000,9:F0}ms {o.Downtime * 1000,7:F1}ms");
        double? Ms(string f) => row.TryGetProperty(f, out var v) && v.ValueKind == System.Text.Json.JsonValueKind.Number ? v.GetDouble() : null;
        string status = row.GetProperty("status").GetString()!;
        Console.WriteLine($"{c,-34} {"QEMU 7.2 block mig.",-22} {Human((ulong)(Ms("wire_bytes") ?? 0)),12} {Ms("total_time_ms") ?? 0,9:F0}ms {Ms("downtime_ms") ?? 0,7:F1}ms{(status == "completed" ? "" : $"  ({status})")}");
    }
    if (root.TryGetProperty("throughput", out var tp))
    {
        Console.WriteLine("guest disk throughput, blk_long (30000 random runs of 1..16 sectors, each read back; same image):");
        foreach (var e in tp.EnumerateObject())
            Console.WriteLine($"  {e.Name,-9} {e.Value.GetProperty("seconds").GetDouble(),7:F2} s  ~{e.Value.GetProperty("write_mb_per_s").GetDouble():F2} MB/s written{(e.Value.GetProperty("ok").GetBoolean() ? "" : " (did not finish)")}");
    }
}

static string Name(Strategy s) => s switch { Strategy.Log => "log", Strategy.Precopy => "precopy", _ => "postcopy" };
static string Human(ulong b) => b >= 1 << 20 ? $"{b / 1048576.0:F2} MiB" : b >= 1 << 10 ? $"{b / 1024.0:F1} KiB" : $"{b} B";
int Arg(string name, int fallback) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1]) : fallback; }
