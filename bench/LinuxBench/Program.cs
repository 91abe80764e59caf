using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

// The Linux guest's figures, ours against QEMU 7.2 TCG side by side in one run (issue 12):
//  - boot time from power-on to the userland banner (the kernel's own uptime, and the wall clock);
//  - the recording overhead on that boot;
//  - the log rate of an idle Linux guest (two recordings, one idle for --idle seconds more: the
//    difference in trace bytes over the difference in guest time, so the boot and the checkpoint cancel out);
//  - how much faster than real time the idle part replays.
// Usage: dotnet run -c Release --project bench/LinuxBench [-- --runs 3 --idle 60]
// Needs the CLI built (dotnet build src/Cli -c Release) and guests/linux/build (scripts/setup.sh).
CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
int runs = int.Parse(BenchRepo.Arg(args, "--runs", "3"));
double idle = double.Parse(BenchRepo.Arg(args, "--idle", "60"));
string root = BenchRepo.Root;
string lm = Path.Combine(root, "src", "Cli", "bin", "Release", "net10.0", "lm.dll");
string image = Path.Combine(root, "guests", "linux", "build", "Image"), initrd = Path.Combine(root, "guests", "linux", "build", "initramfs.cpio");
const string Firmware = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin";
const string Append = "console=ttyS0 earlycon";
foreach (var f in new[] { lm, image, initrd, Firmware })
    if (!File.Exists(f)) { Console.Error.WriteLine($"linuxbench: {f} is missing (build the CLI, run scripts/setup.sh)"); return 1; }

string[] qemu = ["-M", "virt", "-cpu", "rv64,h=false,sstc=false,zba=false,zbb=false,zbc=false,zbs=false,Zihintpause=false,svinval=false,svnapot=false,svpbmt=false,pmu-num=0",
    "-m", "256M", "-smp", "1", "-bios", Firmware, "-kernel", image, "-initrd", initrd, "-append", Append,
    "-display", "none", "-serial", "stdio", "-monitor", "none", "-nodefaults", "-device", "virtio-rng-device", "-device", "virtio-balloon-device,free-page-reporting=on"];
string[] Ours(params string[] extra) => [lm, "run", "--mem", "256M", "--kernel", image, "--initrd", initrd, "--append", Append, .. extra];

Console.WriteLine($"linuxbench: {runs} runs, idle {idle:F0} s, {Environment.ProcessorCount} cores, load {File.ReadAllText("/proc/loadavg").Split(' ')[0]}");
var boots = new Dictionary<string, List<(double Guest, double Wall)>> { ["qemu 7.2 tcg"] = [], ["ours"] = [], ["ours --record"] = [] };
string tmp = Directory.CreateTempSubdirectory("lm-linuxbench-").FullName;
try
{
    for (int i = 0; i < runs; i++)
    {
        boots["qemu 7.2 tcg"].Add(Boot("qemu-system-riscv64", qemu, 0));
        boots["ours"].Add(Boot("dotnet", Ours(), 0));
        boots["ours --record"].Add(Boot("dotnet", Ours("--record", Path.Combine(tmp, "boot.trace")), 0));
    }
    Console.WriteLine("boot to the banner (median of runs): kernel uptime at the banner / wall clock from process start to 'kv ready'");
    foreach (var (who, list) in boots)
        Console.WriteLine($"  {who,-14} {Median(list.Select(b => b.Guest)),7:F3} s guest   {Median(list.Select(b => b.Wall)),7:F3} s wall   (runs: {string.Join(", ", list.Select(b => b.Guest.ToString("F3")))})");
    double q = Median(boots["qemu 7.2 tcg"].Select(b => b.Guest)), o = Median(boots["ours"].Select(b => b.Guest)), r = Median(boots["ours --record"].Select(b => b.Guest));
    Console.WriteLine($"  ours / qemu {o / q:F2}x (target <= 1); recording overhead on the boot {(r / o - 1) * 100:F1} %");

    string shortTrace = Path.Combine(tmp, "short.trace"), longTrace = Path.Combine(tmp, "idle.trace");
    Boot("dotnet", Ours("--record", shortTrace), 0);
    Boot("dotnet", Ours("--record", longTrace), idle);
    long shortBytes = new FileInfo(shortTrace).Length, longBytes = new FileInfo(longTrace).Length;
    double rate = (longBytes - shortBytes) / idle;
    Console.WriteLine($"idle log rate: {longBytes - shortBytes} bytes more over {idle:F0} s more of idle guest time = {rate:F0} B/s (target <= 1024 B/s; QEMU rr, bare-metal idle: 13.7 KB/s)");
    // Medians of alternating replays; a difference inside their spread is reported as a bound, not a ratio.
    var shortRuns = new List<double>(); var longRuns = new List<double>();
    for (int i = 0; i < runs; i++) { shortRuns.Add(Replay(shortTrace)); longRuns.Add(Replay(longTrace)); }
    double replayShort = Median(shortRuns), replayLong = Median(longRuns);
    double spread = Math.Max(shortRuns.Max() - shortRuns.Min(), longRuns.Max() - longRuns.Min());
    double idleReplay = replayLong - replayShort;
    string verdict = idleReplay > spread
        ? $"the {idle:F0} s of idle replay in {idleReplay:F2} s = {idle / idleReplay:F0}x real time"
        : $"the {idle:F0} s of idle add {idleReplay:F3} s, within the replays' spread of {spread:F3} s: at least {idle / Math.Max(spread, 1e-3):F0}x real time";
    Console.WriteLine($"replay (median of {runs}): boot trace {replayShort:F2} s, idle trace {replayLong:F2} s; {verdict} (target >= 100x)");
}
finally { Directory.Delete(tmp, recursive: true); }
return 0;

// Starts a guest, waits for 'kv ready', stays idle for `idleFor` seconds, powers it off; returns the banner's uptime and the wall time to 'kv ready'.
(double Guest, double Wall) Boot(string file, string[] argv, double idleFor)
{
    var psi = new ProcessStartInfo(file) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
    foreach (var a in argv) psi.ArgumentList.Add(a);
    var clock = Stopwatch.StartNew();
    using var p = Process.Start(psi)!;
    p.ErrorDataReceived += (_, _) => { };
    p.BeginErrorReadLine();
    var text = new StringBuilder();
    var buf = new char[4096];
    double wall = 0;
    while (!text.ToString().Contains("kv ready"))
    {
        int n = p.StandardOutput.Read(buf);
        if (n <= 0) throw new InvalidOperationException($"{file} ended before 'kv ready':\n{text}");
        text.Append(buf, 0, n);
        if (clock.Elapsed > TimeSpan.FromMinutes(5)) throw new TimeoutException($"{file}: no 'kv ready' in 5 min");
    }
    wall = clock.Elapsed.TotalSeconds;
    var m = Regex.Match(text.ToString(), @"booted in (\d+\.\d+) s");
    if (idleFor > 0) Thread.Sleep(TimeSpan.FromSeconds(idleFor));
    p.StandardInput.Write("poweroff\n");
    p.StandardInput.Flush();
    var drain = p.StandardOutput.ReadToEndAsync();
    if (!p.WaitForExit(60_000)) { p.Kill(true); throw new TimeoutException($"{file} did not power off"); }
    drain.Wait();
    return (double.Parse(m.Groups[1].Value), wall);
}

double Replay(string trace)
{
    var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
    foreach (var a in new[] { lm, "replay", "--stats", trace }) psi.ArgumentList.Add(a);
    var clock = Stopwatch.StartNew();
    using var p = Process.Start(psi)!;
    var output = p.StandardOutput.ReadToEndAsync();
    string err = p.StandardError.ReadToEnd();
    p.WaitForExit();
    output.Wait();
    if (p.ExitCode != 0) throw new InvalidOperationException($"lm replay {trace} exited {p.ExitCode}:\n{err}");
    return clock.Elapsed.TotalSeconds;
}

static double Median(IEnumerable<double> values)
{
    var v = values.Order().ToArray();
    return v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
}
