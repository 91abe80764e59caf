using LiveMigration.Guest.Cpu;
using LiveMigration.Guest.State;

namespace LiveMigration.Guest;

/// <summary>
/// F/D state (f0..f31, fcsr) as an optional section after the CPU's, written only when it is not
/// all zero (a guest that never touched FP saves, digests and records exactly as before F and D
/// existed); a state without it restores zeros.
/// </summary>
public sealed unsafe partial class Machine
{
    // Bump when a field is added to or removed from the section; readers accept 1..current.
    private const ushort FpuStateVersion = 1;
    private const int SavedFpRegisters = 32;

    private bool FpuStateIsZero()
    {
        CpuState* s = _cpu;
        if (s->Fcsr != 0) return false;
        for (int i = 0; i < SavedFpRegisters; i++)
            if (s->F[i] != 0) return false;
        return true;
    }

    private void SaveFpu(StateWriter w)
    {
        if (FpuStateIsZero()) return;
        w.BeginSection("FPU ", FpuStateVersion);
        w.U8(SavedFpRegisters);
        WriteFpuFields(w);
        w.EndSection();
    }

    private void WriteFpuFields(StateWriter w)
    {
        CpuState* s = _cpu;
        for (int i = 0; i < SavedFpRegisters; i++) w.U64(s->F[i]);
        w.U32(s->Fcsr);
    }

    /// <summary>Reads and checks the FPU section if present; the action sets the FP state (zeros without the section).</summary>
    private Action PrepareFpu(StateReader r)
    {
        var f = new ulong[SavedFpRegisters];
        uint fcsr = 0;
        if (r.NextSectionIs("FPU "))
        {
            r.OpenSection("FPU ", 1, FpuStateVersion);
            if (r.U8() != SavedFpRegisters) throw new InvalidDataException("FPU state has a different register count");
            for (int i = 0; i < SavedFpRegisters; i++) f[i] = r.U64();
            fcsr = r.U32();
            if (fcsr > 0xFF) throw new InvalidDataException($"FPU state has fcsr 0x{fcsr:x}, beyond its 8 bits");
            r.CloseSection();
        }
        return () =>
        {
            CpuState* s = _cpu;
            for (int i = 0; i < SavedFpRegisters; i++) s->F[i] = f[i];
            s->Fcsr = fcsr;
        };
    }
}
