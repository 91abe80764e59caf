using LiveMigration.Guest;
using LiveMigration.Guest.Loader;
using LiveMigration.Recorder;
using LiveMigration.Replayer;
using LiveMigration.Trace;

namespace LiveMigration.Trace.Tests;

/// <summary>Locates the repository, the built guests and the golden traces.</summary>
public static class Repo
{
    public static string Root => LiveMigration.Tests.Shared.RepoPaths.Root;

    public static string Guest(string name) => LiveMigration.Tests.Shared.RepoPaths.Guest(name);

    public static string Traces => Path.Combine(Root, "traces");
}

/// <summary>The result of recording a guest in the scripted (deterministic) world.</summary>
public sealed record Recording(byte[] Trace, byte[] Output, ulong FinalDigest, ulong Icount, StopReason Reason, int? ExitCode);

public static class Record
{
    public static readonly RecorderOptions SmallIntervals = new() { DigestInterval = 1 << 20, FlushInterval = null };

    /// <summary>Records <paramref name="guest"/> with a scripted port; deterministic for equal arguments.</summary>
    public static Recording Guest(string guest, byte[]? input = null, RecorderOptions? options = null, ulong maxIcount = 2_000_000_000,
        TraceWriterOptions? writerOptions = null, ulong ticksPerMillion = 100_000)
    {
        options ??= SmallIntervals;
        byte[] image = File.ReadAllBytes(Repo.Guest(guest));
        var ms = new MemoryStream();
        var port0 = new ScriptedHostPort();
        using var machine = new Machine(new MachineConfig(), port0);
        ElfLoader.Load(machine, image);
        using var recorder = TraceRecorder.Start(ms, machine, image, guest + ".elf", "scripted", options, writerOptions);
        var port = new ScriptedHostPort(input, recorder, ticksPerMillion);
        machine.HostPort = port;
        var reason = machine.Run(maxIcount);
        recorder.Finish(machine, reason);
        return new Recording(ms.ToArray(), port.Output.ToArray(), machine.ComputeDigest(), machine.Icount, reason, machine.ExitCode);
    }

    /// <summary>Replays a whole trace held in memory; returns status, output and the final machine digest.</summary>
    public static (ReplayStatus Status, byte[] Output, ulong Digest, ulong Icount, Divergence? Divergence) Replay(byte[] trace, ulong startAt = 0, ulong until = ulong.MaxValue, bool verify = true)
    {
        using var file = TraceFile.Open(new MemoryStream(trace));
        var output = new MemoryStream();
        using var session = ReplaySession.OpenFile(file, new ReplayOptions { Verify = verify, Output = output.WriteByte }, startAt);
        var status = session.Run(until);
        return (status, output.ToArray(), session.Machine.ComputeDigest(), session.Machine.Icount, session.Divergence);
    }
}
