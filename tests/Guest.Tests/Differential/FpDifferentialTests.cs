using LiveMigration.Guest.Loader;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Differential;

/// <summary>
/// Seeded random F/D streams (<see cref="FpStreams"/>) under QEMU 7.2 and under our machine,
/// interpreted and with the block compiler: every op's result bits and fflags must match.
/// </summary>
public class FpDifferentialTests
{
    public const int OpsPerStream = 3000;

    public static (byte[] Qemu, byte[] Ours) Run(int seed, int count, bool compile, out string[] listing, int loops = 1)
    {
        byte[] elf = FpStreams.Build(seed, count, out listing, loops);
        var qemu = HandWritten.RunOnQemu(elf, timeoutMs: 120_000);
        Assert.Equal(0, qemu.ExitCode);
        var port = new TestHostPort();
        using var m = new Machine(new MachineConfig(), port, compile, EagerCompile.Threshold);
        ElfLoader.Load(m, elf);
        Assert.Equal(StopReason.Exited, m.Run(50_000_000));
        Assert.Equal(0, m.ExitCode);
        return (qemu.Stdout, port.Output);
    }

    public static void AssertSame(int seed, byte[] qemu, byte[] ours, string[] listing)
    {
        Assert.Equal(listing.Length * 16, qemu.Length);
        Assert.Equal(qemu.Length, ours.Length);
        int flagged = 0;
        for (int i = 0; i < listing.Length; i++)
        {
            ulong qv = BitConverter.ToUInt64(qemu, i * 16), ov = BitConverter.ToUInt64(ours, i * 16);
            ulong qf = BitConverter.ToUInt64(qemu, i * 16 + 8), of = BitConverter.ToUInt64(ours, i * 16 + 8);
            if (qf != 0) flagged++;
            Assert.True(qv == ov && qf == of,
                $"seed {seed}, op {i} ({listing[i]}): result 0x{ov:x16} flags 0x{of:x2} here, 0x{qv:x16} flags 0x{qf:x2} on QEMU");
        }
        // Not vacuous: the stream must raise flags often.
        Assert.True(flagged > listing.Length / 5, $"only {flagged} of {listing.Length} ops raised a flag");
    }

    [RequiresToolTheory("qemu-system-riscv64")]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    public void RandomFpStreamsMatchQemu(int seed)
    {
        var (q, o) = Run(seed, OpsPerStream, compile: false, out var listing);
        AssertSame(seed, q, o, listing);
    }

    /// <summary>The same kind of stream in a loop of 80 passes: from the 64th on it runs as compiled blocks.</summary>
    [RequiresToolTheory("qemu-system-riscv64")]
    [InlineData(21)]
    [InlineData(22)]
    [InlineData(23)]
    public void RandomFpStreamsMatchQemuInCompiledBlocks(int seed)
    {
        var (q, o) = Run(seed, 150, compile: true, out var listing, loops: 80);
        AssertSame(seed, q, o, listing);
    }
}
