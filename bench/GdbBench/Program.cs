// Reverse execution on a long recording:
//   1. reverse-stepi at the end of a trace of 10^9 instructions (target: at most 100 ms);
//   2. reverse-continue to a write watchpoint hit 10^8 instructions back.
// The trace is of guests/build/compute_sparse.elf (compute.c writing its `seed` once per 8M
// iterations, about every 2.6*10^8 instructions), recorded in-process in the scripted world.
//   dotnet run -c Release --project bench/GdbBench [-- TRACE [INSTRUCTIONS]]
using System.Diagnostics;
using LiveMigration.Guest;
using LiveMigration.Guest.Debug;
using LiveMigration.Guest.Loader;
using LiveMigration.Recorder;
using LiveMigration.Replayer;
using LiveMigration.Replayer.Gdb;
using LiveMigration.Trace;

string root = FindRoot();
string elf = Path.Combine(root, "guests", "build", "compute_sparse.elf");
string tracePath = args.Length > 0 ? args[0] : Path.Combine(Path.GetTempPath(), "lm-gdbbench-1e9.lmtrace");
ulong length = args.Length > 1 ? ulong.Parse(args[1]) : 1_000_000_000;
const ulong Back = 100_000_000;

if (!File.Exists(elf)) { Console.Error.WriteLine($"{elf} is missing: run `make -C guests`"); return 2; }
RecordIfMissing(elf, tracePath, length);

using var file = TraceFile.Open(tracePath);
using var dbg = new ReplayDebugger(file, new ReplayOptions());
Console.WriteLine($"trace: {file.FinalIcount:N0} instructions, {new FileInfo(tracePath).Length:N0} bytes");

// Where `seed` lives: a0 at the entry of run().
ulong runEntry = Symbol(elf, "run.constprop.0");
dbg.AddBreakpoint(runEntry);
if (dbg.Continue().Kind != StopKind.Breakpoint) throw new InvalidOperationException("run() never called");
ulong seed = dbg.Machine.GetRegister(10);
dbg.RemoveBreakpoint(runEntry);

// Forward to the end of the trace (checkpoints are taken on the way), noting every write to seed.
var forward = Stopwatch.StartNew();
dbg.AddWatchpoint(new Watchpoint(seed, 8, WatchKind.Write));
var hits = new List<ulong>();
TargetStop stop;
while ((stop = dbg.Continue()).Kind == StopKind.Watchpoint) { hits.Add(dbg.Icount + 1); dbg.StepForward(); }
forward.Stop();
if (stop.Kind != StopKind.ReplayEnd || dbg.Divergence != null) throw new InvalidOperationException($"forward replay ended with {stop}");
ulong end = dbg.Icount;
Console.WriteLine($"forward replay to the end (icount {end:N0}) with a watchpoint armed: {forward.Elapsed.TotalSeconds:F2} s " +
                  $"({end / forward.Elapsed.TotalSeconds / 1e6:F0} MIPS), {dbg.DigestsVerified} digests verified, {hits.Count} writes to seed, " +
                  $"{dbg.Checkpoints.Count} checkpoints, {dbg.Checkpoints.Bytes >> 10} KiB");

// 1. reverse-stepi at the end.
ReverseSteps(dbg, "compute_sparse");

// 2. reverse-continue to a watchpoint hit 10^8 instructions back.
ulong hit = hits.LastOrDefault(h => h + Back <= end && !hits.Any(o => o > h && o <= h + Back));
if (hit == 0) throw new InvalidOperationException($"no write to seed with {Back:N0} quiet instructions after it; hits at {string.Join(", ", hits)}");
dbg.Seek(hit + Back);
var rc = Stopwatch.StartNew();
stop = dbg.ReverseContinue();
rc.Stop();
if (stop.Kind != StopKind.Watchpoint || dbg.Icount != hit) throw new InvalidOperationException($"reverse-continue stopped with {stop}, expected the write at {hit}");
Console.WriteLine($"reverse-continue to the write watchpoint hit {Back:N0} instructions back (icount {hit + Back:N0} -> {hit:N0}): {rc.Elapsed.TotalMilliseconds:F0} ms");

// 3. The same reverse-stepi on a guest with a large state: dirty_forever writes 64 MiB at random.
string dirtyElf = Path.Combine(root, "guests", "build", "dirty_forever.elf");
string dirtyTrace = Path.Combine(Path.GetDirectoryName(tracePath)!, "lm-gdbbench-dirty-1e9.lmtrace");
RecordIfMissing(dirtyElf, dirtyTrace, length);
using (var dirtyFile = TraceFile.Open(dirtyTrace))
using (var d = new ReplayDebugger(dirtyFile, new ReplayOptions()))
{
    var f = Stopwatch.StartNew();
    var end2 = d.Continue();
    if (end2.Kind != StopKind.ReplayEnd || d.Divergence != null) throw new InvalidOperationException($"forward replay ended with {end2}");
    Console.WriteLine($"dirty_forever: forward replay to icount {d.Icount:N0}: {f.Elapsed.TotalSeconds:F2} s, {d.Checkpoints.Count} checkpoints, {d.Checkpoints.Bytes >> 20} MiB");
    ReverseSteps(d, "dirty_forever");
}
return 0;

static void ReverseSteps(ReplayDebugger dbg, string name)
{
    var times = new List<double>();
    for (int i = 0; i < 5; i++)
    {
        ulong before = dbg.Icount;
        var t = Stopwatch.StartNew();
        dbg.ReverseStep();
        times.Add(t.Elapsed.TotalMilliseconds);
        if (dbg.Icount != before - 1) throw new InvalidOperationException("reverse-stepi missed its icount");
    }
    Console.WriteLine($"{name}: reverse-stepi at the end of the trace: first {times[0]:F1} ms, then {string.Join(", ", times.Skip(1).Select(x => x.ToString("F1")))} ms (target <= 100 ms)");
}

static void RecordIfMissing(string elf, string tracePath, ulong length)
{
    if (File.Exists(tracePath)) return;
    var rec = Stopwatch.StartNew();
    byte[] image = File.ReadAllBytes(elf);
    using (var output = File.Create(tracePath))
    using (var machine = new Machine(new MachineConfig(), new ScriptedHostPort()))
    {
        ElfLoader.Load(machine, image);
        using var recorder = TraceRecorder.Start(output, machine, image, Path.GetFileName(elf), "scripted", new RecorderOptions { FlushInterval = null });
        machine.HostPort = new ScriptedHostPort(null, recorder, 100_000);
        var reason = machine.Run(length);
        recorder.Finish(machine, reason);
    }
    Console.WriteLine($"recorded {length:N0} instructions of {Path.GetFileName(elf)} to {tracePath} in {rec.Elapsed.TotalSeconds:F1} s");
}

static string FindRoot() => BenchRepo.Root;

static ulong Symbol(string elf, string name)
{
    var psi = new ProcessStartInfo("riscv64-unknown-elf-nm", [elf]) { RedirectStandardOutput = true };
    using var p = Process.Start(psi)!;
    foreach (var line in p.StandardOutput.ReadToEnd().Split('\n'))
    {
        var f = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        if (f.Length == 3 && f[2] == name) return Convert.ToUInt64(f[0], 16);
    }
    throw new KeyNotFoundException(name);
}
