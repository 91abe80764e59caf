using System.Text;
using LiveMigration.Guest.Tests.Infra;

namespace LiveMigration.Guest.Tests.Differential;

/// <summary>
/// The same ELF under QEMU 7.2 (the reference) and under our machine: byte-identical UART output
/// and the same exit code.
/// </summary>
public class QemuDifferentialTests
{
    private const string Qemu = "qemu-system-riscv64";

    public static TheoryData<string> FiniteGuests => ["hello", "compute_small", "dirty_small", "dirty", "idle", "traps", "kv", "paging", "fp_small"];

    [RequiresToolTheory(Qemu), MemberData(nameof(FiniteGuests))]
    public void OutputAndExitCodeMatchQemu(string guest)
    {
        string elf = Repo.Guest(guest);
        byte[]? stdin = guest == "kv" ? Encoding.ASCII.GetBytes(GuestRun.KvScript) : null;
        var qemu = HandWritten.RunOnQemu(elf, stdin: stdin);
        Assert.False(qemu.TimedOut, $"QEMU did not finish {guest} in 60 s");

        var ours = GuestRun.Run(guest);

        Assert.Equal(Encoding.ASCII.GetString(qemu.Stdout), ours.Text);
        Assert.Equal(qemu.Stdout, ours.Output);
        Assert.Equal(StopReason.Exited, ours.Reason);
        Assert.Equal(qemu.ExitCode, ours.ExitCode);
    }
}

/// <summary>
/// guests/pagerand.c: random Sv39 tables, permissions, SUM/MXR and A/D states, accessed from S and U,
/// interpreted, compiled on the guest's thread and compiled in the background: the same lines as QEMU.
/// </summary>
public class RandomPagingDifferentialTests
{
    [RequiresToolTheory("qemu-system-riscv64")]
    [InlineData(BlockCompilation.Off)]
    [InlineData(BlockCompilation.Inline)]
    [InlineData(BlockCompilation.Background)]
    public void RandomPageTablesMatchQemu(BlockCompilation compilation)
    {
        string elf = Repo.Guest("pagerand");
        var qemu = HandWritten.RunOnQemu(elf);
        Assert.Equal(0, qemu.ExitCode);
        var port = new TestHostPort();
        using var m = new Machine(new MachineConfig(), port, compilation, EagerCompile.Threshold);
        LiveMigration.Guest.Loader.ElfLoader.Load(m, File.ReadAllBytes(elf));
        Assert.Equal(StopReason.Exited, m.Run(200_000_000));
        string[] theirs = Encoding.ASCII.GetString(qemu.Stdout).Split('\n'), ours = port.OutputText.Split('\n');
        Assert.True(theirs.Length > 4000, $"QEMU printed only {theirs.Length} lines");
        for (int i = 0; i < Math.Min(theirs.Length, ours.Length); i++)
            Assert.True(theirs[i] == ours[i], $"line {i + 1}: ours \"{ours[i]}\", QEMU \"{theirs[i]}\"");
        Assert.Equal(theirs.Length, ours.Length);
        Assert.Equal(0, m.ExitCode);
        // Not vacuous: every outcome occurs.
        foreach (string kind in new[] { " fault 0xc ", " fault 0xd ", " fault 0xf ", "fetch 0x", "store 0x", " U load", " = " })
            Assert.Contains(kind, port.OutputText);
    }
}
