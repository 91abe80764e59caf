using LiveMigration.Guest.Cpu;

namespace LiveMigration.Guest.Tests.Infra;

/// <summary>
/// A small machine for instruction tests: code goes at the start of RAM, a trap vector is set up
/// at <see cref="TrapVector"/> (an infinite loop so a trap is visible as pc == vector), and the
/// data area at <see cref="Data"/> is free for loads and stores.
/// </summary>
public sealed class Rig : IDisposable
{
    public const ulong Base = 0x8000_0000;
    public const ulong TrapVector = Base + 0x10000;
    public const ulong Data = Base + 0x20000;
    public const ulong RamSize = 1 << 20;

    public Machine M { get; }
    public TestHostPort Port { get; }
    private readonly List<byte> _code = [];

    public Rig(TestHostPort? port = null)
    {
        Port = port ?? new TestHostPort();
        M = new Machine(new MachineConfig { MemorySize = RamSize }, Port);
        M.Memory.Write(TrapVector, BitConverter.GetBytes(Rv.Jal(0, 0)));
        M.Cpu.Mtvec = TrapVector;
    }

    /// <summary>Address of the next instruction to be emitted.</summary>
    public ulong Here => Base + (ulong)_code.Count;

    public Rig Emit(params uint[] words)
    {
        foreach (uint w in words) _code.AddRange(BitConverter.GetBytes(w));
        Flush();
        return this;
    }

    public Rig EmitC(params ushort[] halves)
    {
        foreach (ushort h in halves) _code.AddRange(BitConverter.GetBytes(h));
        Flush();
        return this;
    }

    private void Flush() => M.Memory.Write(Base, _code.ToArray());

    public ulong this[int reg]
    {
        get => M.GetRegister(reg);
        set => M.SetRegister(reg, value);
    }

    /// <summary>Executes exactly <paramref name="n"/> more instructions (traps count as one).</summary>
    public StopReason Step(int n = 1) => M.Run(M.Icount + (ulong)n);

    public ulong ReadU64(ulong address)
    {
        var b = new byte[8];
        M.Memory.Read(address, b);
        return BitConverter.ToUInt64(b);
    }

    public void WriteU64(ulong address, ulong value) => M.Memory.Write(address, BitConverter.GetBytes(value));

    public void AssertTrap(ulong cause, ulong epc, ulong tval)
    {
        Assert.Equal(TrapVector, M.Pc);
        Assert.Equal(cause, M.Cpu.Mcause);
        Assert.Equal(epc, M.Cpu.Mepc);
        Assert.Equal(tval, M.Cpu.Mtval);
    }

    public void AssertNoTrap() => Assert.NotEqual(TrapVector, M.Pc);

    public void Dispose() => M.Dispose();
}

/// <summary>Register numbers by ABI name.</summary>
public static class X
{
    public const int Zero = 0, Ra = 1, Sp = 2, Gp = 3, Tp = 4, T0 = 5, T1 = 6, T2 = 7, S0 = 8, S1 = 9;
    public const int A0 = 10, A1 = 11, A2 = 12, A3 = 13, A4 = 14, A5 = 15, A6 = 16, A7 = 17;
}
