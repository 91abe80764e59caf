namespace LiveMigration.Guest.Tests.Infra;

/// <summary>Pieces shared by the hand-assembled differential programs and their QEMU runs.</summary>
public static class HandWritten
{
    /// <summary>Appends: print x2 bytes from x31 as raw UART bytes (clobbers x2..x6), then pass through the finisher.</summary>
    public static void PrintAndPass(List<byte> code, ulong codeBase)
    {
        void W(uint insn) => code.AddRange(BitConverter.GetBytes(insn));
        ulong Here() => codeBase + (ulong)code.Count;
        W(Rv.Lui(3, 0x1000_0000));
        ulong loop = Here();
        // Wait for THRE as a driver must (QEMU clears it while its chardev is busy).
        W(Rv.Lbu(5, 3, 5));
        W(Rv.Andi(5, 5, 0x20));
        W(Rv.Beq(5, X.Zero, -8));
        W(Rv.Lbu(4, 31, 0));
        W(Rv.Sb(4, 3, 0));
        W(Rv.Addi(31, 31, 1));
        W(Rv.Addi(2, 2, -1));
        W(Rv.Bne(2, X.Zero, (long)(loop - Here())));
        W(Rv.Lui(5, 0x0010_0000));
        W(Rv.Lui(6, 0x5000));
        W(Rv.Addi(6, 6, 0x555));
        W(Rv.Sw(6, 5, 0));
        W(Rv.Jal(X.Zero, 0));
    }

    /// <summary>Runs an ELF image under qemu-system-riscv64 (virt, no firmware); see <see cref="RunOnQemu(string, string[], byte[], int)"/>.</summary>
    public static ToolResult RunOnQemu(byte[] elf, int timeoutMs = 60_000)
    {
        string path = Path.Combine(Path.GetTempPath(), $"lm-hand-{Guid.NewGuid():N}.elf");
        File.WriteAllBytes(path, elf);
        try { return RunOnQemu(path, timeoutMs: timeoutMs); }
        finally { File.Delete(path); }
    }

    /// <summary>
    /// Runs an ELF file under qemu-system-riscv64 (virt, no firmware, 128 MiB): the UART's output
    /// becomes Stdout. Without input it goes through a file: QEMU drops a byte its chardev could not
    /// write after a few retries, so a pipe the test drains late (a loaded machine) loses output.
    /// </summary>
    public static ToolResult RunOnQemu(string elfPath, string[]? extraArgs = null, byte[]? stdin = null, int timeoutMs = 60_000)
    {
        string? serialFile = stdin == null ? Path.Combine(Path.GetTempPath(), $"lm-serial-{Guid.NewGuid():N}.out") : null;
        try
        {
            // -serial stdio with the monitor off feeds stdin to the UART (-nographic would mux the monitor in).
            string[] args = ["-M", "virt", "-bios", "none", "-m", "128M", "-display", "none", "-monitor", "none",
                "-serial", serialFile == null ? "stdio" : $"file:{serialFile}", .. extraArgs ?? [], "-kernel", elfPath];
            var r = Tool.Run("qemu-system-riscv64", args, stdin ?? [], timeoutMs);
            return serialFile == null ? r : r with { Stdout = File.Exists(serialFile) ? File.ReadAllBytes(serialFile) : [] };
        }
        finally { if (serialFile != null) File.Delete(serialFile); }
    }
}
