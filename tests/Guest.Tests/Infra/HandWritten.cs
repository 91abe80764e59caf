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
        // Wait for THRE as a driver must: QEMU drops a byte written while its chardev is full (a test
        // process slow to drain the pipe then saw 64 KiB of 192 KB).
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

    /// <summary>Runs an ELF image under qemu-system-riscv64 (virt, no firmware, UART on stdout).</summary>
    public static ToolResult RunOnQemu(byte[] elf, int timeoutMs = 60_000)
    {
        string path = Path.Combine(Path.GetTempPath(), $"lm-hand-{Guid.NewGuid():N}.elf");
        File.WriteAllBytes(path, elf);
        try
        {
            return Tool.Run("qemu-system-riscv64",
                ["-M", "virt", "-bios", "none", "-m", "128M", "-display", "none", "-serial", "stdio", "-monitor", "none", "-kernel", path], [], timeoutMs);
        }
        finally { File.Delete(path); }
    }
}
