using LiveMigration.Guest.Tests.Infra;
using LiveMigration.Guest;

namespace LiveMigration.Guest.Tests;

/// <summary>
/// The block compiler must change speed only, never behaviour: seeded random loops of ALU, M-extension,
/// load/store and forward-branch instructions run once interpreted and once compiled, and must end in
/// the same registers, memory and digest. Loops run long enough for their blocks to be compiled.
/// </summary>
public class BlockCompilerEquivalenceTests
{
    private const ulong CodeBase = 0x8000_0000;
    private const ulong DataBase = 0x8010_0000;

    [Theory]
    [InlineData(1, false)]
    [InlineData(2, false)]
    [InlineData(3, false)]
    [InlineData(4, false)]
    [InlineData(5, false)]
    [InlineData(6, false)]
    [InlineData(7, false)]
    [InlineData(8, false)]
    [InlineData(9, true)]
    [InlineData(10, true)]
    public void CompiledLoopsMatchTheInterpreter(int seed, bool dataOnCodePage)
    {
        var program = RandomProgram(new Random(seed), dataOnCodePage ? CodeBase + 0x800 : DataBase, out var registers);
        var (interpDigest, interp) = Run(program, registers, compile: false);
        var (compiledDigest, compiled) = Run(program, registers, compile: true);
        Assert.Equal(interp, compiled);
        Assert.Equal(interpDigest, compiledDigest);
    }

    [Fact]
    public void InstructionLimitIsExactInsideCompiledLoops()
    {
        var program = RandomProgram(new Random(42), DataBase, out var registers);
        for (ulong limit = 5_000; limit < 5_100; limit += 7)
        {
            using var a = Load(program, registers, compile: false);
            using var b = Load(program, registers, compile: true);
            Assert.Equal(StopReason.InstructionLimit, a.Run(limit));
            Assert.Equal(StopReason.InstructionLimit, b.Run(limit));
            Assert.Equal(limit, b.Icount);
            Assert.Equal(a.Pc, b.Pc);
            Assert.Equal(a.ComputeDigest(), b.ComputeDigest());
        }
    }

    private static Machine Load(uint[] program, ulong[] registers, bool compile)
    {
        var m = new Machine(new MachineConfig { MemorySize = 4 << 20 }, NullHostPort.Instance, compile ? BlockCompilation.Inline : BlockCompilation.Off, EagerCompile.Threshold);
        var bytes = new byte[program.Length * 4];
        Buffer.BlockCopy(program, 0, bytes, 0, bytes.Length);
        m.Memory.Write(CodeBase, bytes);
        m.Reset(CodeBase);
        for (int r = 1; r < 32; r++) m.SetRegister(r, registers[r]);
        return m;
    }

    private static (ulong Digest, ulong[] Registers) Run(uint[] program, ulong[] registers, bool compile)
    {
        using var m = Load(program, registers, compile);
        var reason = m.Run(10_000_000);
        Assert.Equal(StopReason.Exited, reason);
        var regs = new ulong[32];
        for (int r = 0; r < 32; r++) regs[r] = m.GetRegister(r);
        return (m.ComputeDigest(), regs);
    }

    /// <summary>Random body in a counted loop, then the finisher's pass value.</summary>
    private static uint[] RandomProgram(Random rng, ulong dataBase, out ulong[] registers)
    {
        registers = new ulong[32];
        for (int r = 5; r <= 15; r++) registers[r] = (ulong)rng.NextInt64() ^ ((ulong)rng.Next() << 40);
        registers[20] = dataBase;
        registers[21] = 300; // loop trips: enough for the compile threshold
        var code = new List<uint>();
        int bodyStart = code.Count;
        int n = rng.Next(20, 45);
        for (int i = 0; i < n; i++)
        {
            int rd = rng.Next(5, 16), rs1 = rng.Next(0, 16), rs2 = rng.Next(5, 16);
            switch (rng.Next(6))
            {
                case 0:
                case 1:
                    {
                        var (f7, f3, op) = RTypes[rng.Next(RTypes.Length)];
                        code.Add(R(f7, rs2, rs1, f3, rd, op));
                        break;
                    }
                case 2:
                    {
                        var (f3, op, shift) = ITypes[rng.Next(ITypes.Length)];
                        int imm = shift switch { 64 => rng.Next(64), 32 => rng.Next(32), _ => rng.Next(-2048, 2048) };
                        if (shift == 64 && f3 == 5 && rng.Next(2) == 0) imm |= 0x400; // SRAI
                        if (shift == 32 && f3 == 5 && rng.Next(2) == 0) imm |= 0x400; // SRAIW
                        code.Add(I(imm, rs1, f3, rd, op));
                        break;
                    }
                case 3:
                    {
                        // x22 = data + (x[rs] & mask): in bounds, sometimes misaligned
                        code.Add(I(rng.Next(2) == 0 ? 0x7F8 : 0x7FF, rs2, 7, 22, 0x13));
                        code.Add(R(0, 20, 22, 0, 22, 0x33));
                        if (rng.Next(2) == 0) code.Add(I(0, 22, rng.Next(7), rd, 0x03)); // LB..LWU
                        else code.Add(S(0, rs2, 22, rng.Next(4), 0x23));                  // SB..SD
                        break;
                    }
                case 4:
                    code.Add(U(rng.Next(1 << 20), rd, rng.Next(2) == 0 ? 0x37 : 0x17)); // LUI / AUIPC
                    break;
                default:
                    {
                        int skip = rng.Next(1, 4);
                        int f3 = new[] { 0, 1, 4, 5, 6, 7 }[rng.Next(6)];
                        code.Add(B((skip + 1) * 4, rs2, rs1, f3, 0x63));
                        for (int k = 0; k < skip; k++) code.Add(I(rng.Next(-2048, 2048), rs1, 0, rd, 0x13));
                        break;
                    }
            }
        }
        code.Add(I(-1, 21, 0, 21, 0x13));                                  // addi x21, x21, -1
        code.Add(B((bodyStart - code.Count) * 4, 0, 21, 1, 0x63));          // bne x21, x0, body
        code.Add(U(0x100, 23, 0x37));                                       // lui x23, 0x100 (finisher)
        code.Add(U(0x5, 24, 0x37));                                         // lui x24, 0x5
        code.Add(I(0x555, 24, 0, 24, 0x13));                                // addi x24, x24, 0x555
        code.Add(S(0, 24, 23, 2, 0x23));                                    // sw x24, 0(x23)
        return code.ToArray();
    }

    private static readonly (int F7, int F3, int Op)[] RTypes =
    [
        (0, 0, 0x33), (0x20, 0, 0x33), (0, 1, 0x33), (0, 2, 0x33), (0, 3, 0x33), (0, 4, 0x33), (0, 5, 0x33), (0x20, 5, 0x33),
        (0, 6, 0x33), (0, 7, 0x33), (1, 0, 0x33), (1, 1, 0x33), (1, 2, 0x33), (1, 3, 0x33), (1, 4, 0x33), (1, 5, 0x33),
        (1, 6, 0x33), (1, 7, 0x33), (0, 0, 0x3B), (0x20, 0, 0x3B), (0, 1, 0x3B), (0, 5, 0x3B), (0x20, 5, 0x3B),
        (1, 0, 0x3B), (1, 4, 0x3B), (1, 5, 0x3B), (1, 6, 0x3B), (1, 7, 0x3B),
    ];

    /// <summary>(funct3, opcode, shift width or 0 for a 12-bit immediate).</summary>
    private static readonly (int F3, int Op, int Shift)[] ITypes =
    [
        (0, 0x13, 0), (2, 0x13, 0), (3, 0x13, 0), (4, 0x13, 0), (6, 0x13, 0), (7, 0x13, 0), (1, 0x13, 64), (5, 0x13, 64),
        (0, 0x1B, 0), (1, 0x1B, 32), (5, 0x1B, 32),
    ];

    private static uint R(int f7, int rs2, int rs1, int f3, int rd, int op) => (uint)((f7 << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op);
    private static uint I(int imm, int rs1, int f3, int rd, int op) => (uint)(((imm & 0xFFF) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op);
    private static uint S(int imm, int rs2, int rs1, int f3, int op) => (uint)((((imm >> 5) & 0x7F) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | ((imm & 0x1F) << 7) | op);
    private static uint U(int imm20, int rd, int op) => (uint)((imm20 << 12) | (rd << 7) | op);

    private static uint B(int imm, int rs2, int rs1, int f3, int op) =>
        (uint)((((imm >> 12) & 1) << 31) | (((imm >> 5) & 0x3F) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12)
               | (((imm >> 1) & 0xF) << 8) | (((imm >> 11) & 1) << 7) | op);
}
