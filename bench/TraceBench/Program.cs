// TraceBench: recording overhead, log rate and compression, replay speed.
// Usage: dotnet run -c Release --project bench/TraceBench [-- --rounds N]
using System.Diagnostics;
using LiveMigration.Guest;
using LiveMigration.Guest.Devices.Clint;
using LiveMigration.Guest.Loader;
using LiveMigration.Recorder;
using LiveMigration.Recorder.Serial;
using LiveMigration.Replayer;
using LiveMigration.Trace;

int rounds = args.Length >= 2 && args[0] == "--rounds" ? int.Parse(args[1]) : 5;
bool overheadOnly = args.Contains("--overhead-only");
string root = FindRoot();
string Guest(string name) => Path.Combine(root, "guests", "build", name + ".elf");

Console.WriteLine($"TraceBench: {Environment.ProcessorCount} cores, .NET {Environment.Version}, {rounds} rounds (median)");
Console.WriteLine();

// 1. Recording overhead: the same guest with the live port, without and with recording, interleaved.
Console.WriteLine("Recording overhead (live port, trace to a file, digest every 2^24 instructions)");
Console.WriteLine($"{"guest",-14}{"instructions",14}{"plain s",10}{"record s",10}{"plain MIPS",12}{"record MIPS",12}{"overhead",10}{"(best-of)",11}");
foreach (var g in new[] { "compute", "dirty" })
{
    var plain = new List<double>();
    var rec = new List<double>();
    ulong icount = 0;
    RunLive(g, record: false); // warm up the JIT on both paths
    RunLive(g, record: true);
    for (int r = 0; r < rounds; r++)
    {
        // Alternate which goes first (ABBA) so order effects (GC, page reuse, other load) cancel.
        bool recordFirst = r % 2 == 1;
        var first = RunLive(g, record: recordFirst);
        var second = RunLive(g, record: !recordFirst);
        var (t0, n0) = recordFirst ? second : first;
        var (t1, n1) = recordFirst ? first : second;
        if (n0 != n1) throw new InvalidOperationException($"{g}: recording changed the instruction count ({n0} vs {n1})");
        plain.Add(t0);
        rec.Add(t1);
        icount = n0;
    }
    double p = Median(plain), q = Median(rec);
    Console.WriteLine($"{g,-14}{icount,14}{p,10:F3}{q,10:F3}{icount / p / 1e6,12:F1}{icount / q / 1e6,12:F1}{(q / p - 1) * 100,9:F2}%{(rec.Min() / plain.Min() - 1) * 100,10:F2}%");
}
Console.WriteLine();
if (overheadOnly) return 0;

// 2. Log size per guest (live recording, real clock), and compression of the events.
Console.WriteLine("Log rate and compression (live recording)");
Console.WriteLine($"{"guest",-14}{"wall s",8}{"events",9}{"trace B",10}{"events B",10}{"raw ev B",10}{"log B/s",10}{"ratio",8}");
var traces = new Dictionary<string, (byte[] Trace, double Wall)>();
foreach (var g in new[] { "hello", "compute", "dirty", "idle", "kv" })
{
    byte[]? input = g == "kv" ? "SET a 1\nGET a\nSET b two words\nGET b\nDEL a\nSTATS\nQUIT\n"u8.ToArray() : null;
    var (trace, wall) = RecordLive(g, input);
    traces[g] = (trace, wall);
    var s = TraceInspector.Summarize(new MemoryStream(trace));
    long evStored = s.StoredBytesByFrameKind[(int)FrameKind.Events], evRaw = s.RawBytesByFrameKind[(int)FrameKind.Events];
    Console.WriteLine($"{g,-14}{wall,8:F3}{s.EventCount,9}{trace.Length,10}{evStored,10}{evRaw,10}{evStored / wall,10:F0}{(double)evRaw / evStored,8:F2}");
}
Console.WriteLine("(trace B includes the embedded initial checkpoint; log B/s and ratio are for events frames, headers included)");
Console.WriteLine();

// 3. Replay speed as a multiple of real time.
Console.WriteLine("Replay speed (verify digests)");
Console.WriteLine($"{"guest",-14}{"recorded s",12}{"guest time s",14}{"replay s",10}{"x real time",13}{"replay MIPS",13}");
foreach (var g in new[] { "idle", "compute", "dirty", "kv" })
{
    var (trace, wall) = traces[g];
    Replay(trace); // warm up
    var times = new List<double>();
    ulong icount = 0;
    for (int r = 0; r < rounds; r++)
    {
        var sw = Stopwatch.StartNew();
        icount = Replay(trace);
        times.Add(sw.Elapsed.TotalSeconds);
    }
    double t = Median(times);
    var s = TraceInspector.Summarize(new MemoryStream(trace));
    double guestSeconds = Math.Max(wall, s.TimeSpanTicks / (double)Clint.Frequency);
    Console.WriteLine($"{g,-14}{wall,12:F3}{s.TimeSpanTicks / (double)Clint.Frequency,14:F3}{t,10:F4}{guestSeconds / t,13:F1}{icount / t / 1e6,13:F1}");
}
Console.WriteLine("(x real time = max(recorded wall time, guest time covered) / replay time)");
return 0;

(double Seconds, ulong Icount) RunLive(string guest, bool record)
{
    byte[] image = File.ReadAllBytes(Guest(guest));
    using var backend = new StreamSerialBackend(null, Stream.Null);
    using var machine = new Machine(new MachineConfig(), new LiveHostPort(backend));
    ElfLoader.Load(machine, image);
    string path = Path.Combine(Path.GetTempPath(), $"tracebench-{Environment.ProcessId}.lmtrace");
    FileStream? file = null;
    TraceRecorder? recorder = null;
    if (record)
    {
        file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, 1 << 16);
        recorder = TraceRecorder.Start(file, machine, image, guest, "live", new RecorderOptions());
        machine.HostPort = new RecordingHostPort(backend, recorder);
    }
    var sw = Stopwatch.StartNew();
    var reason = machine.Run();
    recorder?.Finish(machine, reason);
    double t = sw.Elapsed.TotalSeconds;
    recorder?.Dispose();
    file?.Dispose();
    if (record) File.Delete(path);
    if (reason != StopReason.Exited || machine.ExitCode != 0) throw new InvalidOperationException($"{guest} did not pass ({reason})");
    return (t, machine.Icount);
}

(byte[] Trace, double Wall) RecordLive(string guest, byte[]? input)
{
    byte[] image = File.ReadAllBytes(Guest(guest));
    using var backend = new StreamSerialBackend(input == null ? null : new MemoryStream(input), Stream.Null);
    using var machine = new Machine(new MachineConfig(), new LiveHostPort(backend));
    ElfLoader.Load(machine, image);
    var ms = new MemoryStream();
    using var recorder = TraceRecorder.Start(ms, machine, image, guest, "live", new RecorderOptions());
    machine.HostPort = new RecordingHostPort(backend, recorder);
    var sw = Stopwatch.StartNew();
    var reason = machine.Run();
    recorder.Finish(machine, reason);
    return (ms.ToArray(), sw.Elapsed.TotalSeconds);
}

ulong Replay(byte[] trace)
{
    using var file = TraceFile.Open(new MemoryStream(trace));
    using var session = ReplaySession.OpenFile(file, new ReplayOptions());
    var status = session.Run();
    if (status != ReplayStatus.Finished) throw new InvalidOperationException($"replay: {status} {session.Divergence}");
    return session.Machine.Icount - session.StartIcount;
}

static double Median(List<double> xs)
{
    var s = xs.Order().ToList();
    return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
}

static string FindRoot() => BenchRepo.Root;
