using LiveMigration.Replayer;

namespace LiveMigration.Trace.Tests;

public class DivergenceTests
{
    [Fact]
    public void A_perturbed_machine_is_caught_at_the_next_digest_with_both_digests()
    {
        var rec = Record.Guest("compute_small", options: new Recorder.RecorderOptions { DigestInterval = 1 << 20, FlushInterval = null });
        using var file = TraceFile.Open(new MemoryStream(rec.Trace));
        using var s = ReplaySession.OpenFile(file, new ReplayOptions());
        Assert.Equal(ReplayStatus.ReachedUntil, s.Run(1_500_000));
        s.Machine.Memory.WritePage(200, new byte[4096].Select(_ => (byte)0xAB).ToArray()); // an unused page: only the digest notices
        Assert.Equal(ReplayStatus.Diverged, s.Run());
        var d = s.Divergence!;
        Assert.Equal(2_097_152ul, d.Icount); // the first digest after the damage
        Assert.NotNull(d.ExpectedDigest);
        Assert.NotEqual(d.ExpectedDigest, d.ActualDigest);
        Assert.Contains("diverged at icount 2097152", d.ToString());
        Assert.NotEmpty(d.LastEvents);
    }

    [Fact]
    public void Without_verification_the_same_damage_replays_to_the_end()
    {
        var rec = Record.Guest("compute_small");
        using var file = TraceFile.Open(new MemoryStream(rec.Trace));
        using var s = ReplaySession.OpenFile(file, new ReplayOptions { Verify = false });
        s.Run(1_500_000);
        s.Machine.Memory.WritePage(200, new byte[4096].Select(_ => (byte)0xAB).ToArray());
        Assert.Equal(ReplayStatus.Finished, s.Run());
    }

    [Fact]
    public void A_guest_that_behaves_differently_diverges_on_its_inputs()
    {
        // Replay kv's trace but change a register that steers the guest: it will read/sleep at other icounts.
        var rec = Record.Guest("idle");
        using var file = TraceFile.Open(new MemoryStream(rec.Trace));
        using var s = ReplaySession.OpenFile(file, new ReplayOptions { Verify = false });
        s.Run(5_000);
        s.Machine.SetPc(s.Machine.Pc + 4);
        var status = s.Run();
        Assert.Equal(ReplayStatus.Diverged, status);
        Assert.Null(s.Divergence!.ExpectedDigest);
    }
}
