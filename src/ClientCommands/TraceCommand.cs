using System.CommandLine;
using LiveMigration.Guest.Devices.Clint;
using LiveMigration.Trace;

namespace LiveMigration.Cli.Commands;

/// <summary>`lm trace info|dump|verify TRACE`: look inside a trace without executing it.</summary>
public static class TraceCommand
{
    public static Command Create()
    {
        var command = new Command("trace", "Inspect trace files without executing them");
        command.Subcommands.Add(Info());
        command.Subcommands.Add(Dump());
        command.Subcommands.Add(Verify());
        return command;
    }

    private static Argument<FileInfo> TraceArg() => new("trace") { Description = "trace file" };

    private static Command Info()
    {
        var trace = TraceArg();
        var command = new Command("info", "Config, duration, events and bytes by kind, compression ratio, checkpoints");
        command.Arguments.Add(trace);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            using var stream = File.OpenRead(parse.GetValue(trace)!.FullName);
            var s = TraceInspector.Summarize(stream);
            var h = s.Header;
            var o = Console.Out;
            o.WriteLine($"format version  {h.FormatVersion}{(h.FormatVersion < TraceFormat.CurrentVersion ? $" (older than this build's {TraceFormat.CurrentVersion})" : "")}");
            o.WriteLine($"machine         {h.Machine.Isa}, {h.Machine.Harts} hart, {h.Machine.MemorySize >> 20} MiB at 0x{h.Machine.RamBase:x}");
            o.WriteLine($"image           {h.ImageName} (xxh3 0x{h.ImageDigest:x16})");
            o.WriteLine($"recorder        {h.Recorder}; digest every {(h.DigestInterval == 0 ? "?" : h.DigestInterval.ToString())}, checkpoint every {(h.CheckpointInterval == 0 ? "-" : h.CheckpointInterval.ToString())} instructions");
            o.WriteLine($"start           icount {h.StartIcount}, digest 0x{h.StartDigest:x16}, initial checkpoint {h.InitialCheckpoint.Length} bytes");
            o.WriteLine($"instructions    {s.FinalIcount - s.StartIcount} (icount {s.StartIcount}..{s.FinalIcount})");
            o.WriteLine($"guest time      {s.TimeSpanTicks / (double)Clint.Frequency:F3} s (between the first and last time events)");
            o.WriteLine($"state           {(s.Complete ? "complete" : "INCOMPLETE: " + s.Truncation)}");
            o.WriteLine($"file            {s.FileBytes} bytes");
            o.WriteLine($"events          {s.EventCount}");
            for (int k = 1; k < s.EventsByKind.Length; k++)
                if (s.EventsByKind[k] > 0) o.WriteLine($"  {TraceEvent.KindName((EventKind)k),-16}{s.EventsByKind[k],10} events {s.EventBytesByKind[k],10} bytes");
            o.WriteLine("frames");
            for (int k = 1; k < s.FramesByKind.Length; k++)
                if (s.FramesByKind[k] > 0) o.WriteLine($"  {((FrameKind)k).ToString().ToLowerInvariant(),-16}{s.FramesByKind[k],10} frames {s.StoredBytesByFrameKind[k],10} bytes stored {s.RawBytesByFrameKind[k],10} raw");
            o.WriteLine($"compression     {s.CompressionRatio:F2}x on events");
            o.WriteLine($"checkpoints     {s.Checkpoints.Count} in frames");
            foreach (var (icount, bytes, offset) in s.Checkpoints) o.WriteLine($"  icount {icount,14}  {bytes,10} bytes  at byte {offset}");
            return 0;
        }));
        return command;
    }

    private static Command Dump()
    {
        var trace = TraceArg();
        var from = new Option<ulong>("--from") { HelpName = "ICOUNT", Description = "first icount to show" };
        var to = new Option<ulong?>("--to") { HelpName = "ICOUNT", Description = "last icount to show" };
        var command = new Command("dump", "One event per line, as stable text: ICOUNT KIND VALUE");
        command.Arguments.Add(trace);
        command.Options.Add(from);
        command.Options.Add(to);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            using var file = TraceFile.Open(parse.GetValue(trace)!.FullName);
            var output = new StreamWriter(Console.OpenStandardOutput()) { AutoFlush = false, NewLine = "\n" };
            TraceInspector.Dump(file, output, parse.GetValue(from), parse.GetValue(to) ?? ulong.MaxValue);
            output.Flush();
            return 0;
        }));
        return command;
    }

    private static Command Verify()
    {
        var trace = TraceArg();
        var command = new Command("verify", "Check checksums and structure without executing; exit 0 when intact, 2 when corrupt or truncated");
        command.Arguments.Add(trace);
        command.SetAction(parse => CliErrors.Run(() =>
        {
            using var stream = File.OpenRead(parse.GetValue(trace)!.FullName);
            var s = TraceInspector.Verify(stream);
            Console.WriteLine($"ok: {s.FramesByKind.Sum()} frames, {s.EventCount} events, {s.Checkpoints.Count} checkpoints, icount {s.StartIcount}..{s.FinalIcount}");
            return 0;
        }));
        return command;
    }
}
