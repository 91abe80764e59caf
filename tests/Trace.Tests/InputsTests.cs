using System.Buffers.Binary;
using System.Text;
using LiveMigration.Guest;
using LiveMigration.Guest.Loader;
using LiveMigration.Recorder;
using LiveMigration.Recorder.Serial;
using LiveMigration.Replayer;

namespace LiveMigration.Trace.Tests;

/// <summary>Each kind of input survives record → replay: timer load, entropy, live serial input.</summary>
public class InputsTests
{
    [Theory]
    [InlineData("idle", 1_000)]         // slow clock: many instructions per tick
    [InlineData("idle", 5_000_000)]     // fast clock: deadlines overrun, the timer fires at every poll
    [InlineData("traps", 10_000_000)]
    public void Timer_load_replays(string guest, ulong ticksPerMillion)
    {
        var rec = Record.Guest(guest, ticksPerMillion: ticksPerMillion, maxIcount: 50_000_000);
        using (var file = TraceFile.Open(new MemoryStream(rec.Trace)))
            Assert.Contains(file.Events(), e => e.Kind == EventKind.TimeDelivered || e.Kind == EventKind.TimeRead);
        var replay = Record.Replay(rec.Trace);
        Assert.Equal(ReplayStatus.Finished, replay.Status);
        Assert.Equal(rec.Output, replay.Output);
        Assert.Equal(rec.FinalDigest, replay.Digest);
    }

    [Fact]
    public void Entropy_reads_are_logged_and_replayed()
    {
        // csrrw a0/a1/a2, seed, x0; then write 0x5555 to the finisher.
        uint[] program = [0x01501573, 0x015015f3, 0x01501673, 0x001002b7, 0x00005337, 0x55530313, 0x0062a023];
        var page = new byte[4096];
        for (int i = 0; i < program.Length; i++) BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(i * 4), program[i]);

        var ms = new MemoryStream();
        using var machine = new Machine(new MachineConfig(), new ScriptedHostPort());
        machine.Memory.WritePage(0, page);
        machine.SetPc(machine.Memory.Base);
        using var recorder = TraceRecorder.Start(ms, machine, [], "seed-test", "scripted", Record.SmallIntervals);
        machine.HostPort = new ScriptedHostPort(recorder: recorder, entropySeed: 77);
        Assert.Equal(StopReason.Exited, machine.Run(1000));
        recorder.Finish(machine, StopReason.Exited);
        ulong[] seen = [machine.GetRegister(10), machine.GetRegister(11), machine.GetRegister(12)];
        Assert.All(seen, v => Assert.Equal(2UL << 30, v & ~0xFFFFUL)); // OPST = ES16

        using var file = TraceFile.Open(new MemoryStream(ms.ToArray()));
        var entropy = file.Events().Where(e => e.Kind == EventKind.Entropy).ToList();
        Assert.Equal(new ulong[] { 0, 1, 2 }, entropy.Select(e => e.Icount));
        Assert.Equal(seen.Select(v => v & 0xFFFF), entropy.Select(e => e.Value));
        using var s = ReplaySession.OpenFile(file, new ReplayOptions());
        Assert.Equal(ReplayStatus.Finished, s.Run());
        Assert.Equal(seen, new[] { s.Machine.GetRegister(10), s.Machine.GetRegister(11), s.Machine.GetRegister(12) });
    }

    [Fact]
    public void Live_recording_of_kv_with_piped_input_replays()
    {
        byte[] image = File.ReadAllBytes(Repo.Guest("kv"));
        var output = new MemoryStream();
        using var backend = new StreamSerialBackend(new MemoryStream(Encoding.ASCII.GetBytes(RecordReplayTests.KvScript)), output);
        using var machine = new Machine(new MachineConfig(), new ScriptedHostPort());
        ElfLoader.Load(machine, image);
        var ms = new MemoryStream();
        using var recorder = TraceRecorder.Start(ms, machine, image, "kv.elf", "live", new RecorderOptions { DigestInterval = 1 << 16 });
        machine.HostPort = new RecordingHostPort(backend, recorder);
        var reason = machine.Run(500_000_000);
        recorder.Finish(machine, reason);
        backend.Flush();
        Assert.Equal(StopReason.Exited, reason);
        Assert.Contains("BYE", Encoding.ASCII.GetString(output.ToArray()));

        var replay = Record.Replay(ms.ToArray());
        Assert.Equal(ReplayStatus.Finished, replay.Status);
        Assert.Equal(output.ToArray(), replay.Output);
        Assert.Equal(machine.ComputeDigest(), replay.Digest);
    }

    [Fact]
    public void Live_recording_of_idle_replays_faster_than_real_time()
    {
        byte[] image = File.ReadAllBytes(Repo.Guest("idle"));
        using var backend = new StreamSerialBackend(null, Stream.Null);
        using var machine = new Machine(new MachineConfig(), new ScriptedHostPort());
        ElfLoader.Load(machine, image);
        var ms = new MemoryStream();
        using var recorder = TraceRecorder.Start(ms, machine, image, "idle.elf", "live", new RecorderOptions());
        machine.HostPort = new RecordingHostPort(backend, recorder);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Assert.Equal(StopReason.Exited, machine.Run());
        double recorded = clock.Elapsed.TotalSeconds;
        recorder.Finish(machine, StopReason.Exited);
        clock.Restart();
        var replay = Record.Replay(ms.ToArray());
        double replayed = clock.Elapsed.TotalSeconds;
        Assert.Equal(ReplayStatus.Finished, replay.Status);
        Assert.Equal(machine.ComputeDigest(), replay.Digest);
        Assert.True(recorded >= 2.9, $"idle should take 3 s live, took {recorded:F2}");
        Assert.True(replayed * 10 < recorded, $"replay took {replayed:F3} s for {recorded:F2} s of idle guest");
    }
}
