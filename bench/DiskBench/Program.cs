// Bytes on the wire for a guest with a virtio-blk disk, migrated between two hosts on loopback
// without shared storage (issue 13's figure): (a) a fresh destination, (b) a destination holding
// an older copy of the image that differs in 1 % of its blocks, (c) as (b) with the disk workload
// (guests/blk.c, forever) writing during the migration; each with log shipping and pre-copy.
//   dotnet run -c Release --project bench/DiskBench [-- --image-mib 64 --filled 20]
// The image has --filled percent of its blocks random (the rest zero). Case (a) and (b) run
// idle_forever, which never touches its disk, so they measure the image transfer alone.
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Recorder.Disk;

int imageMib = Arg("--image-mib", 64), filled = Arg("--filled", 20);
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
    Console.WriteLine($"{"case",-34} {"strategy",-8} {"total",10} {"disk",10} {"RAM",10} {"log",10} {"state",8} {"blocks",7} {"zero",6} {"disk/image",10} {"time",8} {"downtime",9}");
    var runs = new[] { ("(a) fresh destination", "idle_forever", false), ("(b) base differs in 1 % of blocks", "idle_forever", true), ("(c) (b) + disk workload writing", "blk_forever", true) };
    // The first pass (case (a) only) warms the JIT up on the switchover's code paths: no rows.
    foreach (var (pass, (label, guest, withBase)) in runs.Take(1).Select(r => (0, r)).Concat(runs.Select(r => (1, r))))
        foreach (var strategy in new[] { Strategy.Log, Strategy.Precopy })
        {
            bool warmUp = pass == 0;
            string source = Path.Combine(dir, "source.img"), target = Path.Combine(dir, "target.img");
            File.WriteAllBytes(source, image);
            File.Delete(target);
            using var a = new GuestHost(new HostOptions { DiskDir = dir });
            using var b = new GuestHost(new HostOptions { DiskDir = dir });
            using (var c = HostClient.Connect(a.Address)) c.Start("g", File.ReadAllBytes(LiveMigration.Tests.Shared.RepoPaths.Guest(guest)), 64 << 20, guest, new DriveSpec(source, false));
            Thread.Sleep(guest == "blk_forever" ? 1500 : 300); // the workload has written for a while
            using var hc = HostClient.Connect(a.Address);
            var r = hc.Migrate(new MigrateCommand { Name = "g", Target = b.Address, Strategy = strategy, DowntimeLimitMs = 50, DiskPath = target, DiskBase = withBase ? olderPath : "" });
            if (warmUp) continue;
            if (!r.Success) { Console.WriteLine($"{label,-34} {Name(strategy),-8} failed: {r.Error}"); continue; }
            ulong total = r.BytesCheckpoint + r.BytesLog + r.BytesState + r.BytesProtocol + r.BytesPostcopy + r.BytesDisk;
            Console.WriteLine($"{label,-34} {Name(strategy),-8} {Human(total),10} {Human(r.BytesDisk),10} {Human(r.BytesCheckpoint),10} {Human(r.BytesLog),10} {Human(r.BytesState),8} {r.DiskBlocksSent,7} {r.DiskZeroBlocks,6} {100.0 * r.BytesDisk / image.Length,9:F2}% {r.TotalSeconds * 1000,6:F0}ms {r.DowntimeSeconds * 1000,7:F1}ms");
        }
}
finally { Directory.Delete(dir, true); }

static string Name(Strategy s) => s == Strategy.Log ? "log" : "precopy";
static string Human(ulong b) => b >= 1 << 20 ? $"{b / 1048576.0:F2} MiB" : b >= 1 << 10 ? $"{b / 1024.0:F1} KiB" : $"{b} B";
int Arg(string name, int fallback) { int i = Array.IndexOf(args, name); return i >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1]) : fallback; }
