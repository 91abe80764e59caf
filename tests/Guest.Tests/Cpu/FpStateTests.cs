using LiveMigration.Guest.State;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Cpu;

/// <summary>FP state in save/restore and the digest: saved when used, absent (and zero) otherwise.</summary>
public unsafe class FpStateTests
{
    private static byte[] Save(Machine m)
    {
        var w = new StateWriter();
        m.SaveState(w);
        return w.ToArray();
    }

    [Fact]
    public void FpRegistersAndFcsrRoundTrip()
    {
        using var rig = new Rig();
        for (int i = 0; i < 32; i++) rig.M.Cpu.F[i] = 0x0123_4567_89AB_CDEFUL * (ulong)(i + 1);
        rig.M.Cpu.Fcsr = 0xA5;
        byte[] saved = Save(rig.M);
        using var other = new Rig();
        other.M.RestoreState(new StateReader(saved));
        for (int i = 0; i < 32; i++) Assert.Equal(rig.M.Cpu.F[i], other.M.Cpu.F[i]);
        Assert.Equal(0xA5u, other.M.Cpu.Fcsr);
        Assert.Equal(rig.M.ComputeDigest(), other.M.ComputeDigest());
    }

    [Fact]
    public void UnusedFpStateLeavesStateAndDigestAsBefore()
    {
        using var rig = new Rig();
        byte[] before = Save(rig.M);
        ulong digest = rig.M.ComputeDigest();
        Assert.DoesNotContain("FPU ", System.Text.Encoding.ASCII.GetString(before));
        rig.M.Cpu.F[5] = 1;
        Assert.NotEqual(digest, rig.M.ComputeDigest());
        byte[] with = Save(rig.M);
        Assert.Contains("FPU ", System.Text.Encoding.ASCII.GetString(with));
        // A state without the section (every state saved before F and D) restores zeros over used FP state.
        rig.M.RestoreState(new StateReader(before));
        Assert.Equal(0UL, rig.M.Cpu.F[5]);
        Assert.Equal(digest, rig.M.ComputeDigest());
    }

    [Fact]
    public void FcsrBeyondEightBitsIsRejected()
    {
        using var rig = new Rig();
        rig.M.Cpu.F[0] = 1;
        byte[] saved = Save(rig.M);
        string text = System.Text.Encoding.Latin1.GetString(saved);
        int at = text.IndexOf("FPU ", StringComparison.Ordinal);
        Assert.True(at >= 0);
        // Section: tag, u16 version, then (per the writer) its length, u8 count, 32 registers, u32 fcsr.
        int fcsrAt = text.IndexOf("FPU ", StringComparison.Ordinal) + 4 + 2;
        var bad = (byte[])saved.Clone();
        // Find the fcsr by searching from the end of the 32 registers: locate F[0] = 1 and step over 32 registers.
        int f0 = Array.IndexOf(bad, (byte)32, fcsrAt) + 1;
        Assert.Equal(1UL, BitConverter.ToUInt64(bad, f0));
        BitConverter.GetBytes(0x100u).CopyTo(bad, f0 + 32 * 8);
        using var other = new Rig();
        var e = Assert.Throws<InvalidDataException>(() => other.M.RestoreState(new StateReader(bad)));
        Assert.Contains("fcsr", e.Message);
    }
}
