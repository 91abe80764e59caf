using LiveMigration.Guest.Debug;
using LiveMigration.Replayer;
using LiveMigration.Replayer.Gdb;
using LiveMigration.Trace;

namespace LiveMigration.Gdb.Tests;

public class ReverseExecutionTests
{
    private static ReplayOptions Options => new() { Verify = true };

    /// <summary>A straight replay to <paramref name="icount"/>: registers, pc and digest.</summary>
    private static (ulong[] Regs, ulong Pc, ulong Digest) Reference(string guest, ulong icount, byte[]? input = null)
    {
        using var file = Recordings.Open(guest, input);
        using var s = ReplaySession.OpenFile(file, Options, 0);
        Assert.Equal(ReplayStatus.ReachedUntil, s.Run(icount));
        var regs = Enumerable.Range(0, 32).Select(i => s.Machine.GetRegister(i)).ToArray();
        return (regs, s.Machine.Pc, s.Machine.ComputeDigest());
    }

    [Fact]
    public void ReverseStepLandsOnExactlyTheInstructionBeforeWithItsRegisters()
    {
        using var file = Recordings.Open("compute_small");
        using var dbg = new ReplayDebugger(file, Options);
        var rng = new Random(7);
        ulong total = file.FinalIcount;
        Assert.True(total > 3 * ReplayDebugger.MinInterval, $"compute_small runs {total} instructions");
        // Forward far, then back in a random order: targets near and far from checkpoints.
        var targets = new List<ulong> { total - 1, 1, ReplayDebugger.MinInterval, ReplayDebugger.MinInterval + 1 };
        for (int i = 0; i < 6; i++) targets.Add((ulong)rng.NextInt64(2, (long)total - 1));
        foreach (ulong n in targets)
        {
            dbg.Seek(n);
            Assert.Equal(n, dbg.Icount);
            var stop = dbg.ReverseStep();
            Assert.Equal(StopKind.Step, stop.Kind);
            Assert.Equal(n - 1, dbg.Icount);
            var want = Reference("compute_small", n - 1);
            Assert.Equal(want.Pc, dbg.Machine.Pc);
            for (int r = 0; r < 32; r++) Assert.Equal(want.Regs[r], dbg.Machine.GetRegister(r));
            Assert.Equal(want.Digest, dbg.Machine.ComputeDigest());
        }
        Assert.Equal(StopKind.ReplayBegin, SeekThen(dbg, 0, d => d.ReverseStep()).Kind);
    }

    [Fact]
    public void ReverseStepsOverLoggedSerialInputAndTimeStayOnTheRecording()
    {
        // kv reads its commands from the UART: the trace holds serial input (and time) events, which a
        // restored checkpoint must neither miss nor take twice.
        byte[] input = "SET a 1\nSET b 22\nGET a\nGET b\nDEL a\nGET a\nQUIT\n"u8.ToArray();
        using var file = Recordings.Open("kv", input);
        var inputs = file.Events().Where(e => e.Kind == EventKind.SerialInput).Select(e => e.Icount).ToList();
        Assert.NotEmpty(inputs);
        using var dbg = new ReplayDebugger(file, Options);
        var targets = new List<ulong>();
        foreach (ulong at in inputs) if (at > 0) targets.AddRange([at, at + 1, at + 2]);
        targets.Add(file.FinalIcount);
        targets.Reverse(); // from the end backwards: every landing restores a checkpoint
        foreach (ulong n in targets)
        {
            dbg.Seek(n);
            dbg.ReverseStep();
            Assert.Equal(n - 1, dbg.Icount);
            Assert.Equal(Reference("kv", n - 1, input).Digest, dbg.Machine.ComputeDigest());
        }
        var end = dbg.Continue();
        Assert.Equal(StopKind.ReplayEnd, end.Kind);
        Assert.Null(dbg.Divergence);
    }

    private static TargetStop SeekThen(ReplayDebugger d, ulong at, Func<ReplayDebugger, TargetStop> f) { d.Seek(at); return f(d); }

    [Fact]
    public void ReverseContinueVisitsEveryWatchpointHitBackwards()
    {
        string elf = Repo.Guest("debugme");
        ulong counter = Repo.Symbol(elf, "counter");
        var watch = new Watchpoint(counter, 8, WatchKind.Write);

        // Forward: every write hit, as the icount after the store.
        var forward = new List<ulong>();
        using (var file = Recordings.Open("debugme"))
        using (var dbg = new ReplayDebugger(file, Options))
        {
            dbg.AddWatchpoint(watch);
            while (true)
            {
                var stop = dbg.Continue();
                if (stop.Kind != StopKind.Watchpoint) { Assert.Equal(StopKind.ReplayEnd, stop.Kind); break; }
                Assert.Equal(counter, stop.Watch.Address);
                forward.Add(dbg.Icount + 1); // reported before the store, as gdb on riscv expects
                dbg.StepForward();
            }
            Assert.Equal(12, forward.Count); // crt0 clearing .bss, main's store, eight bumps, scale, the last bump
            Assert.Null(dbg.Divergence);

            // Backward from the end: the same hits, newest first, each reported after its store.
            var backward = new List<ulong>();
            while (true)
            {
                var stop = dbg.ReverseContinue();
                if (stop.Kind != StopKind.Watchpoint) { Assert.Equal(StopKind.ReplayBegin, stop.Kind); break; }
                backward.Add(dbg.Icount);
                dbg.ReverseStep(); // what gdb does: step back over the store
            }
            forward.Reverse();
            Assert.Equal(forward, backward);
        }
    }

    [Fact]
    public void ReverseContinueStopsAtTheLastBreakpointHitBeforeHere()
    {
        using var file = Recordings.Open("debugme");
        using var dbg = new ReplayDebugger(file, Options);
        string elf = Repo.Guest("debugme");
        // bump is static: find its address from the first forward hit of a breakpoint on its entry.
        ulong bump = Repo.Symbol(elf, "bump");
        dbg.AddBreakpoint(bump);
        var hits = new List<ulong>();
        TargetStop s;
        while ((s = dbg.Continue()).Kind == StopKind.Breakpoint) { Assert.Equal(bump, dbg.Machine.Pc); hits.Add(dbg.Icount); }
        Assert.Equal(9, hits.Count);
        var back = new List<ulong>();
        while ((s = dbg.ReverseContinue()).Kind == StopKind.Breakpoint) { Assert.Equal(bump, dbg.Machine.Pc); back.Add(dbg.Icount); }
        Assert.Equal(StopKind.ReplayBegin, s.Kind);
        hits.Reverse();
        Assert.Equal(hits, back);
    }

    [Fact]
    public void AfterDebuggingTheReplayStillEndsFaithfullyWithEveryDigestVerified()
    {
        using var file = Recordings.Open("compute_small");
        long digests = file.Events().LongCount(e => e.Kind == EventKind.StateDigest);
        Assert.True(digests > 10);
        using var dbg = new ReplayDebugger(file, Options);
        dbg.Seek(file.FinalIcount / 2);
        dbg.ReverseStep();
        dbg.Seek(file.FinalIcount / 3);
        dbg.StepForward();
        dbg.AddBreakpoint(dbg.Machine.Pc);
        dbg.ReverseContinue();
        dbg.RemoveBreakpoint(dbg.Machine.Pc);
        var end = dbg.Continue();
        Assert.Equal(StopKind.ReplayEnd, end.Kind);
        Assert.Null(dbg.Divergence);
        Assert.Equal(file.FinalIcount, dbg.Icount);
        Assert.Equal(0, dbg.Machine.ExitCode);
        // The last forward pass alone checked every digest from where it restarted to the end.
        Assert.True(dbg.DigestsVerified >= digests / 2, $"{dbg.DigestsVerified} of {digests}");
    }

    [Fact]
    public void AWriteForksIntoALiveSessionAndSaysSo()
    {
        using var file = Recordings.Open("debugme");
        using var dbg = new ReplayDebugger(file, Options);
        var notices = new List<string>();
        dbg.Notice = notices.Add;
        dbg.Seek(100);
        dbg.Fork();
        Assert.True(dbg.Forked);
        Assert.Contains(notices, n => n.Contains("forked into a live session at icount 100"));
        dbg.Machine.SetRegister(5, 12345);
        ulong counter = Repo.Symbol(Repo.Guest("debugme"), "counter");
        dbg.Machine.Memory.Write(counter, BitConverter.GetBytes(999UL));
        var stop = dbg.Continue();
        Assert.Equal(StopKind.Exited, stop.Kind);
        // Going back returns to the recording.
        dbg.ReverseStep();
        Assert.False(dbg.Forked);
        Assert.Contains(notices, n => n.Contains("back on the recorded run"));
        // Memory and registers are the recording's again, not the fork's.
        Assert.Equal(Reference("debugme", dbg.Icount).Digest, dbg.Machine.ComputeDigest());
        Assert.Equal(StopKind.ReplayEnd, dbg.Continue().Kind);
        Assert.Null(dbg.Divergence);
    }

    [Fact]
    public void CheckpointsStayBoundedAndDenseNearTheFocus()
    {
        using var file = Recordings.Open("debugme");
        using var dbg = new ReplayDebugger(file, Options);
        var cache = new CheckpointCache(maxCount: 8);
        for (ulong i = 0; i < 64; i++)
        {
            dbg.Seek(Math.Min(i * 7, file.FinalIcount));
            cache.Add(dbg.Machine, dbg.Icount);
        }
        Assert.True(cache.Count <= 8);
        Assert.Equal(0UL, cache.All[0].Icount);
        var gaps = cache.All.Zip(cache.All.Skip(1), (a, b) => b.Icount - a.Icount).ToList();
        Assert.True(gaps[^1] <= gaps[1], string.Join(",", cache.All.Select(c => c.Icount)));
    }
}
