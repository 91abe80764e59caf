using System.CommandLine;
using System.Diagnostics;
using LiveMigration.Replayer;
using LiveMigration.Trace;

namespace LiveMigration.Cli.Commands;

/// <summary>`lm replay TRACE`: re-executes a recorded run, printing the guest's UART output as recorded.</summary>
public static class ReplayCommand
{
    public const int DivergedExit = 1;
    public const int TruncatedExit = 4;

    public static Command Create()
    {
        var trace = new Argument<FileInfo>("trace") { Description = "trace file written by `lm run --record`" };
        var until = new Option<ulong?>("--until") { HelpName = "ICOUNT", Description = "stop at this icount (exit 0)" };
        var from = new Option<ulong>("--from") { HelpName = "ICOUNT", Description = "start from the latest checkpoint in the trace at or before this icount" };
        var checkpoint = new Option<FileInfo?>("--checkpoint") { HelpName = "FILE", Description = "start from this checkpoint file of the same run (e.g. one saved with --until N --save-checkpoint)" };
        var saveCheckpoint = new Option<FileInfo?>("--save-checkpoint") { HelpName = "FILE", Description = "save the machine where the replay stops to this checkpoint file" };
        var noVerify = new Option<bool>("--no-verify") { Description = "do not compare state digests (inputs are still checked)" };
        var stats = new Option<bool>("--stats") { Description = "print icount, events, digests checked, seconds and speed to stderr" };
        var drive = MachineOptions.Drive();
        var gdb = new Option<string?>("--gdb") { Description = "serve gdb (remote protocol, with reverse execution) on HOST:PORT instead of replaying straight through" };
        var command = new Command("replay", "Replay a trace: exit 0 when faithful; 1 on divergence, 2 on corruption, 4 on a truncated trace");
        command.Arguments.Add(trace);
        foreach (var o in new Option[] { until, from, checkpoint, saveCheckpoint, noVerify, stats, gdb, drive }) command.Options.Add(o);
        command.SetAction(parse => CliErrors.Run(() => parse.GetValue(gdb) is { } endpoint ? GdbReplay.Execute(parse.GetValue(trace)!.FullName, endpoint, !parse.GetValue(noVerify)) : Execute(parse.GetValue(trace)!.FullName, parse.GetValue(until), parse.GetValue(from),
            parse.GetValue(checkpoint)?.FullName, parse.GetValue(saveCheckpoint)?.FullName, !parse.GetValue(noVerify), parse.GetValue(stats),
            parse.GetValue(drive) is { } d ? Recorder.Disk.DriveSpec.Parse(d) : null)));
        return command;
    }

    private static int Execute(string path, ulong? until, ulong from, string? checkpoint, string? saveCheckpoint, bool verify, bool stats, Recorder.Disk.DriveSpec? drive)
    {
        using var file = TraceFile.Open(path);
        using var stdout = new BufferedStream(Console.OpenStandardOutput(), 1 << 16);
        // A replay never writes the image: its disk keeps every write in the overlay.
        using var disk = drive?.Open(commit: false);
        var options = new ReplayOptions { Verify = verify, Output = stdout.WriteByte, Disk = disk };
        using var session = checkpoint != null ? ReplaySession.OpenFile(file, options, File.ReadAllBytes(checkpoint)) : ReplaySession.OpenFile(file, options, from);
        if (session.StartIcount > 0) Console.Error.WriteLine($"lm: replaying from the checkpoint at icount {session.StartIcount}");
        var clock = Stopwatch.StartNew();
        var status = session.Run(until ?? ulong.MaxValue);
        clock.Stop();
        stdout.Flush();

        if (saveCheckpoint != null && status is not ReplayStatus.Diverged)
        {
            File.WriteAllBytes(saveCheckpoint, session.SaveCheckpoint());
            Console.Error.WriteLine($"lm: saved checkpoint at icount {session.Machine.Icount} to {saveCheckpoint}");
        }
        if (stats)
        {
            double s = clock.Elapsed.TotalSeconds;
            ulong ran = session.Machine.Icount - session.StartIcount;
            Console.Error.WriteLine($"lm: icount {session.Machine.Icount}, events {session.Port.EventsApplied}, digests verified {session.Port.DigestsVerified}, " +
                                    $"seconds {s:F3}, guest MIPS {ran / s / 1e6:F1}");
        }
        switch (status)
        {
            case ReplayStatus.Finished when file.Truncation != null:
                Console.Error.WriteLine($"lm: error: replay reached the end event, but {file.Truncation.Message}");
                return TruncatedExit;
            case ReplayStatus.Finished:
            case ReplayStatus.ReachedUntil:
                return 0;
            case ReplayStatus.TraceEnded:
                Console.Error.WriteLine($"lm: error: replayed to icount {session.Machine.Icount}, then {file.Truncation?.Message ?? "the trace ended early"}");
                return TruncatedExit;
            default:
                var d = session.Divergence!;
                if (d.LastEvents.Count > 0)
                {
                    Console.Error.WriteLine("lm: last events before the divergence:");
                    foreach (var e in d.LastEvents) Console.Error.WriteLine($"lm:   {e}");
                }
                Console.Error.WriteLine($"lm: error: replay {d}");
                return DivergedExit;
        }
    }
}
