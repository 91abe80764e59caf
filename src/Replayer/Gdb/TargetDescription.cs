using System.Text;
using LiveMigration.Guest;

namespace LiveMigration.Replayer.Gdb;

/// <summary>
/// The registers gdb sees and their numbers in the remote protocol, which follow gdb's riscv
/// numbering: x0..x31 are 0..31, pc is 32, a CSR is 65 + its CSR number (the FPRs, 33..64, we do
/// not have). The XML names the features gdb's riscv target looks for: org.gnu.gdb.riscv.cpu and
/// org.gnu.gdb.riscv.csr.
/// </summary>
public static class TargetDescription
{
    public const int PcRegnum = 32;
    public const int FirstCsrRegnum = 65;
    /// <summary>misa of our hart: RV64 with A, C, I, M.</summary>
    public const ulong Misa = (2UL << 62) | (1 << 0) | (1 << 2) | (1 << 8) | (1 << 12);

    private static readonly string[] AbiNames =
    [
        "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "fp", "s1", "a0", "a1", "a2", "a3", "a4", "a5",
        "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4", "t5", "t6",
    ];

    public static readonly (string Name, int Number)[] Csrs =
    [
        ("mstatus", 0x300), ("misa", 0x301), ("mie", 0x304), ("mtvec", 0x305), ("mscratch", 0x340), ("mepc", 0x341),
        ("mcause", 0x342), ("mtval", 0x343), ("mip", 0x344), ("mcycle", 0xB00), ("minstret", 0xB02), ("mhartid", 0xF14),
    ];

    public static string Xml { get; } = BuildXml();

    private static string BuildXml()
    {
        var sb = new StringBuilder();
        sb.Append("<?xml version=\"1.0\"?>\n<!DOCTYPE target SYSTEM \"gdb-target.dtd\">\n<target version=\"1.0\">\n");
        sb.Append("<architecture>riscv:rv64</architecture>\n<feature name=\"org.gnu.gdb.riscv.cpu\">\n");
        for (int i = 0; i < 32; i++)
        {
            string type = i switch { 1 => "code_ptr", 2 or 8 => "data_ptr", _ => "int" };
            sb.Append($"  <reg name=\"{AbiNames[i]}\" bitsize=\"64\" type=\"{type}\" regnum=\"{i}\"/>\n");
        }
        sb.Append($"  <reg name=\"pc\" bitsize=\"64\" type=\"code_ptr\" regnum=\"{PcRegnum}\"/>\n</feature>\n");
        sb.Append("<feature name=\"org.gnu.gdb.riscv.csr\">\n");
        foreach (var (name, number) in Csrs)
            sb.Append($"  <reg name=\"{name}\" bitsize=\"64\" regnum=\"{FirstCsrRegnum + number}\" group=\"csr\"/>\n");
        sb.Append("</feature>\n</target>\n");
        return sb.ToString();
    }

    /// <summary>The value of remote register <paramref name="regnum"/>, or null when there is none.</summary>
    public static ulong? Read(Machine m, int regnum)
    {
        if (regnum is >= 0 and < 32) return m.GetRegister(regnum);
        if (regnum == PcRegnum) return m.Pc;
        ref var c = ref m.Cpu;
        return (regnum - FirstCsrRegnum) switch
        {
            0x300 => c.Mstatus,
            0x301 => Misa,
            0x304 => c.Mie,
            0x305 => c.Mtvec,
            0x340 => c.Mscratch,
            0x341 => c.Mepc,
            0x342 => c.Mcause,
            0x343 => c.Mtval,
            0x344 => m.Mip,
            0xB00 => c.Icount + c.McycleOffset,
            0xB02 => c.Icount + c.MinstretOffset,
            0xF14 => 0UL,
            _ => null,
        };
    }

    /// <summary>Writes a register gdb may change (x1..x31, pc, the writable CSRs); false for the others.</summary>
    public static bool Write(Machine m, int regnum, ulong value)
    {
        if (regnum is >= 0 and < 32) { m.SetRegister(regnum, value); return true; }
        if (regnum == PcRegnum) { m.SetPc(value); return true; }
        ref var c = ref m.Cpu;
        switch (regnum - FirstCsrRegnum)
        {
            case 0x305: c.Mtvec = value; return true;
            case 0x340: c.Mscratch = value; return true;
            case 0x341: c.Mepc = value; return true;
            case 0x342: c.Mcause = value; return true;
            case 0x343: c.Mtval = value; return true;
            default: return false;
        }
    }
}
