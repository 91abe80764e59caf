using System.Diagnostics;

namespace LiveMigration.Trace.Tests;

/// <summary>The `lm` commands end to end, as a user runs them: exit codes, stdout, one-line errors.</summary>
public class CliTests
{
    internal static (int Code, string Out, string Err) Lm(params string[] args)
    {
        string dll = Path.Combine(AppContext.BaseDirectory, "lm.dll");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        p.StandardInput.Close();
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        Assert.True(p.WaitForExit(120_000), "lm hung");
        return (p.ExitCode, stdout.Result, stderr.Result);
    }

    private static string Golden(string name) => Path.Combine(Repo.Traces, name + ".lmtrace");

    [Fact]
    public void Replay_prints_the_recorded_output_and_exits_0()
    {
        var rec = Record.Guest("kv", System.Text.Encoding.ASCII.GetBytes(RecordReplayTests.KvScript));
        var (code, stdout, stderr) = Lm("replay", Golden("kv"));
        Assert.True(code == 0, stderr);
        Assert.Equal(System.Text.Encoding.ASCII.GetString(rec.Output), stdout);
    }

    [Fact]
    public void Replay_of_truncated_and_corrupt_traces_fails_with_one_line()
    {
        string dir = Directory.CreateTempSubdirectory("lm-cli").FullName;
        byte[] trace = File.ReadAllBytes(Golden("compute_small"));
        string cut = Path.Combine(dir, "cut.lmtrace"), bad = Path.Combine(dir, "bad.lmtrace");
        File.WriteAllBytes(cut, trace.AsSpan(0, trace.Length - 100).ToArray());
        var broken = (byte[])trace.Clone();
        broken[^300] ^= 0x10;
        File.WriteAllBytes(bad, broken);

        var t = Lm("replay", cut);
        Assert.Equal(4, t.Code);
        Assert.Matches("^lm: error: .*truncated at byte \\d+", t.Err.TrimEnd().Split('\n')[^1]);
        var c = Lm("replay", bad);
        Assert.Equal(2, c.Code);
        Assert.Matches("^lm: error: trace corrupt at byte \\d+", c.Err.Trim());
        Assert.Equal(2, Lm("trace", "verify", bad).Code);
        Assert.Equal(2, Lm("trace", "verify", cut).Code);
        Assert.Equal(0, Lm("trace", "verify", Golden("compute_small")).Code);
    }

    [Fact]
    public void Until_save_checkpoint_then_resume_gives_the_rest_of_the_output()
    {
        string dir = Directory.CreateTempSubdirectory("lm-cli").FullName;
        string ckpt = Path.Combine(dir, "mid.ckpt");
        var full = Lm("replay", Golden("idle"));
        var head = Lm("replay", Golden("idle"), "--until", "20000", "--save-checkpoint", ckpt);
        Assert.Equal(0, head.Code);
        var tail = Lm("replay", Golden("idle"), "--checkpoint", ckpt);
        Assert.True(tail.Code == 0, tail.Err);
        Assert.Equal(full.Out, head.Out + tail.Out);
        var restored = Lm("restore", ckpt, "--max-instructions", "20001");
        Assert.Equal(124, restored.Code);
    }

    [Fact]
    public void Trace_info_and_dump_describe_the_trace()
    {
        var info = Lm("trace", "info", Golden("compute_small"));
        Assert.Equal(0, info.Code);
        Assert.Contains("format version  3", info.Out);
        Assert.Contains("state-digest", info.Out);
        Assert.Contains("checkpoints     2 in frames", info.Out);
        var dump = Lm("trace", "dump", Golden("compute_small"), "--from", "2000000", "--to", "3200000");
        Assert.Equal(0, dump.Code);
        var lines = dump.Out.TrimEnd().Split('\n');
        Assert.Equal(["2097152 state-digest", "2097152 checkpoint 1", "3145728 state-digest"], lines.Skip(2).Select(l => string.Join(' ', l.Split(' ').Take(l.Contains("checkpoint") ? 3 : 2))));
    }

    [Fact]
    public void Run_record_then_replay_round_trips()
    {
        string dir = Directory.CreateTempSubdirectory("lm-cli").FullName;
        string trace = Path.Combine(dir, "hello.lmtrace");
        var run = Lm("run", Repo.Guest("hello"), "--record", trace, "--checkpoint-every", "1000");
        Assert.Equal(0, run.Code);
        var replay = Lm("replay", trace);
        Assert.True(replay.Code == 0, replay.Err);
        Assert.Equal(run.Out, replay.Out);
    }

    [Fact]
    public void A_killed_recorder_leaves_a_trace_that_replays_to_its_last_whole_frame()
    {
        string dir = Directory.CreateTempSubdirectory("lm-cli").FullName;
        string trace = Path.Combine(dir, "killed.lmtrace");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = true };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "lm.dll"), "run", Repo.Guest("idle_forever"), "--record", trace }) psi.ArgumentList.Add(a);
        using (var p = Process.Start(psi)!)
        {
            var stdout = p.StandardOutput.ReadToEndAsync();
            var deadline = DateTime.UtcNow.AddSeconds(30);
            while (DateTime.UtcNow < deadline && (!File.Exists(trace) || new FileInfo(trace).Length < 1600)) Thread.Sleep(100);
            Thread.Sleep(1600); // a few more 500 ms flushes
            p.Kill();
            p.WaitForExit();
        }
        using (var file = TraceFile.Open(trace))
        {
            Assert.False(file.IsComplete);
            Assert.NotNull(file.Truncation);
            Assert.Contains(file.Frames, f => f.Kind == FrameKind.Events);
        }
        var replay = Lm("replay", trace);
        Assert.Equal(4, replay.Code);
        Assert.Contains("tick 1", replay.Out);
        Assert.Contains("truncated", replay.Err);
        Assert.Equal(0, Lm("trace", "info", trace).Code);
    }
}
