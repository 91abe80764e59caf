using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.CompilerServices;
using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.State;

namespace LiveMigration.Guest;

/// <summary>
/// The canonical state digest (src/Trace/FORMAT.md, "State digest"), defined here and nowhere else.
/// It hashes a canonical encoding of its own, never the save format: a save section can change its
/// version or layout without changing a single digest in a trace, checkpoint or migration.
/// </summary>
public sealed unsafe partial class Machine
{
    /// <summary>
    /// Bump when the canonical encoding below changes (not when a save section does): digests of
    /// older traces and checkpoints then stop matching. 1: hashed the save sections. 2: canonical.
    /// 3: CpuState gained the privilege-mode, PMP, trigger and FP fields (M-mode reset values are not zero).
    /// </summary>
    public const uint DigestVersion = 3;

    /// <summary>
    /// xxh3-64 of: "LMDG", digest version (u32), memory size and RAM base (u64 each), the CPU state
    /// (u32 length, then <see cref="CpuState"/>'s bytes made canonical), each bus device in bus order
    /// (u32 length, then its <see cref="Devices.IMmioDevice.WriteDigestState"/> bytes), and the RAM
    /// digest (u64). Only pages written since the last digest are rehashed.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)] // switchover path: optimized at its first call, not tiered up later
    public ulong ComputeDigest()
    {
        var w = new StateWriter();
        w.Bytes("LMDG"u8);
        w.U32(DigestVersion);
        w.U64(Config.MemorySize);
        w.U64(Memory.Base);
        CpuState cpu = CanonicalCpu();
        var bytes = CanonicalCpuBytes(new ReadOnlySpan<byte>(&cpu, sizeof(CpuState)));
        w.U32((uint)bytes.Length);
        w.Bytes(bytes);
        foreach (var d in _devices)
        {
            long lengthAt = w.Stream.Position;
            w.U32(0);
            d.WriteDigestState(w);
            long end = w.Stream.Position;
            w.Stream.Position = lengthAt;
            w.U32((uint)(end - lengthAt - 4));
            w.Stream.Position = end;
        }
        w.U64(Memory.RefreshRamDigest());
        return XxHash3.HashToUInt64(w.Stream.GetBuffer().AsSpan(0, (int)w.Stream.Length));
    }

    /// <summary>
    /// The CPU state with what no instruction can observe cleared: the x0 slot and the x0 write sink,
    /// and an LR value no reservation refers to any more. New architectural fields need nothing here.
    /// </summary>
    private CpuState CanonicalCpu()
    {
        CpuState c = *_cpu;
        c.X[0] = 0;
        c.X[CpuState.SinkRegister] = 0;
        if (c.Reservation == ulong.MaxValue) c.ReservationValue = 0;
        return c;
    }

    /// <summary>
    /// The struct's bytes up to its last non-zero 8-byte word: a field appended to <see cref="CpuState"/>
    /// that is zero in every older state leaves the digests of those states unchanged.
    /// </summary>
    internal static ReadOnlySpan<byte> CanonicalCpuBytes(ReadOnlySpan<byte> cpu)
    {
        int n = cpu.Length & ~7;
        while (n >= 8 && BinaryPrimitives.ReadUInt64LittleEndian(cpu[(n - 8)..n]) == 0) n -= 8;
        return cpu[..n];
    }
}
