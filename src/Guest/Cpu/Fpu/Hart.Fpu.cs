using System.Runtime.CompilerServices;
using LiveMigration.Guest.Cpu.Fpu;

namespace LiveMigration.Guest.Cpu;

/// <summary>Execution of the F and D instructions in the interpreter (compiled blocks call the same <see cref="FpExec"/>).</summary>
internal sealed unsafe partial class Hart
{
    /// <summary>An FP op other than a load or store; false when it is illegal (FS off, bad rounding mode).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool ExecuteFp(ref DecodedInsn d)
    {
        return FpExec.Execute(_s, d.Op, d.Rd, d.Rs1, d.Rs2, d.Imm);
    }

    /// <summary>FLW/FLD/FSW/FSD; returns the next pc (a trap vector on a fault, pc itself on a stall).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong ExecuteFpMemory(ref DecodedInsn d, ulong pc)
    {
        if (!FpEnabled) return Trap(pc, Cause.IllegalInstruction, IllegalBits(pc, d.Length));
        CpuState* s = _s;
        ulong address = s->X[d.Rs1] + (ulong)d.Imm;
        bool single = d.Op is Op.Flw or Op.Fsw;
        int size = single ? 4 : 8;
        if (d.Op is Op.Fsw or Op.Fsd)
        {
            ulong next = StoreSlow(address, size, single ? (uint)s->F[d.Rs2] : s->F[d.Rs2], pc, d.Length);
            return next;
        }
        if (!TryLoad(address, size, pc, out ulong value, out ulong trapped)) return trapped;
        s->F[d.Rd] = single ? FpExec.BoxS((uint)value) : value;
        MarkFpDirty();
        return pc + d.Length;
    }
}
