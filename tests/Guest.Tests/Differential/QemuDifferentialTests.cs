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
        // -serial stdio with the monitor off feeds stdin to the UART (-nographic would mux the monitor in).
        string[] args = ["-M", "virt", "-bios", "none", "-m", "128M", "-display", "none", "-serial", "stdio", "-monitor", "none", "-kernel", elf];
        var qemu = Tool.Run(Qemu, args, stdin ?? [], timeoutMs: 60_000);
        Assert.False(qemu.TimedOut, $"QEMU did not finish {guest} in 60 s");

        var ours = GuestRun.Run(guest);

        Assert.Equal(Encoding.ASCII.GetString(qemu.Stdout), ours.Text);
        Assert.Equal(qemu.Stdout, ours.Output);
        Assert.Equal(StopReason.Exited, ours.Reason);
        Assert.Equal(qemu.ExitCode, ours.ExitCode);
    }
}
