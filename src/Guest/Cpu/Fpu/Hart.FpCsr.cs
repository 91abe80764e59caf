using LiveMigration.Guest.Cpu.Fpu;

namespace LiveMigration.Guest.Cpu;

/// <summary>fflags, frm and fcsr: views of one 8-bit register, illegal while FP is off.</summary>
internal sealed unsafe partial class Hart
{
    private bool TryReadFpCsr(uint csr, out ulong value)
    {
        uint fcsr = _s->Fcsr;
        value = csr switch
        {
            Csr.Fflags => fcsr & FpExec.FlagsMask,
            Csr.Frm => (fcsr >> FpExec.FrmShift) & 7,
            _ => fcsr & 0xFF,
        };
        return FpEnabled;
    }

    private void WriteFpCsr(uint csr, ulong value)
    {
        uint fcsr = _s->Fcsr;
        _s->Fcsr = csr switch
        {
            Csr.Fflags => (fcsr & ~FpExec.FlagsMask) | ((uint)value & FpExec.FlagsMask),
            Csr.Frm => (fcsr & FpExec.FlagsMask) | (((uint)value & 7) << FpExec.FrmShift),
            _ => (uint)value & 0xFF,
        };
        MarkFpDirty();
    }
}
