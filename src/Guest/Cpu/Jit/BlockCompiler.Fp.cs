using System.Reflection;
using System.Reflection.Emit;
using System.Runtime.InteropServices;
using LiveMigration.Guest.Cpu.Fpu;

namespace LiveMigration.Guest.Cpu.Jit;

/// <summary>
/// F and D in compiled blocks. Loads and stores keep their RAM fast path inline; every other op
/// calls <see cref="FpExec.Execute"/> on the CPU state (f registers live there, not in locals).
/// An op that reads an x register gets the local stored to CpuState.X first; one that writes
/// an x register reloads the local after. A false from the helper (FP off, reserved rounding
/// mode) bails before the instruction, which has changed nothing, so the interpreter traps.
/// </summary>
internal static unsafe partial class BlockCompiler
{
    private static readonly int FOffset = (int)Marshal.OffsetOf<CpuState>(nameof(CpuState.F));
    private static readonly MethodInfo FpExecute = typeof(FpExec).GetMethod(nameof(FpExec.Execute))!;
    private static readonly MethodInfo FpEnabled = typeof(FpExec).GetMethod(nameof(FpExec.Enabled))!;
    private static readonly MethodInfo FpMarkDirty = typeof(FpExec).GetMethod(nameof(FpExec.MarkDirty))!;

    private static bool IsFp(Op op) => op is >= Op.Flw and <= Op.FmvXD;

    private static bool FpWritesX(Op op) => op >= Op.FeqS;

    private static bool FpReadsX(Op op) => op is >= Op.FcvtSW and <= Op.FmvDX;

    private sealed partial class Emitter
    {
        /// <summary>Pushes &amp;s->F[r].</summary>
        private void FRegAddress(int r)
        {
            il.Emit(OpCodes.Ldarg_3); il.Emit(OpCodes.Ldc_I4, FOffset + r * 8); il.Emit(OpCodes.Add);
        }

        public void Fp(DecodedInsn d, LocalBuilder offset, Label bail)
        {
            switch (d.Op)
            {
                case Op.Flw or Op.Fld:
                    {
                        bool single = d.Op == Op.Flw;
                        il.Emit(OpCodes.Ldarg_3); il.Emit(OpCodes.Call, FpEnabled); il.Emit(OpCodes.Brfalse, bail);
                        RamOffset(d, offset, bail, single ? 4 : 8);
                        FRegAddress(d.Rd);
                        il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldloc, offset); il.Emit(OpCodes.Conv_U); il.Emit(OpCodes.Add);
                        if (single)
                        {
                            il.Emit(OpCodes.Ldind_U4); il.Emit(OpCodes.Conv_U8);
                            Const(FpExec.BoxMask); il.Emit(OpCodes.Or);
                        }
                        else il.Emit(OpCodes.Ldind_I8);
                        il.Emit(OpCodes.Stind_I8);
                        il.Emit(OpCodes.Ldarg_3); il.Emit(OpCodes.Call, FpMarkDirty);
                        break;
                    }
                case Op.Fsw or Op.Fsd:
                    {
                        bool single = d.Op == Op.Fsw;
                        il.Emit(OpCodes.Ldarg_3); il.Emit(OpCodes.Call, FpEnabled); il.Emit(OpCodes.Brfalse, bail);
                        Store(d, offset, bail, single ? 4 : 8, single ? OpCodes.Stind_I4 : OpCodes.Stind_I8,
                            () => { FRegAddress(d.Rs2); il.Emit(OpCodes.Ldind_I8); });
                        break;
                    }
                default:
                    {
                        if (FpReadsX(d.Op) && d.Rs1 != 0)
                        {
                            il.Emit(OpCodes.Ldarg_0); il.Emit(OpCodes.Ldc_I4, d.Rs1 * 8); il.Emit(OpCodes.Add);
                            Reg(d.Rs1); il.Emit(OpCodes.Stind_I8);
                        }
                        il.Emit(OpCodes.Ldarg_3);
                        il.Emit(OpCodes.Ldc_I4, (int)d.Op); il.Emit(OpCodes.Ldc_I4, (int)d.Rd);
                        il.Emit(OpCodes.Ldc_I4, (int)d.Rs1); il.Emit(OpCodes.Ldc_I4, (int)d.Rs2);
                        Const((ulong)d.Imm);
                        il.Emit(OpCodes.Call, FpExecute);
                        il.Emit(OpCodes.Brfalse, bail);
                        if (FpWritesX(d.Op) && d.Rd != CpuState.SinkRegister)
                        {
                            il.Emit(OpCodes.Ldarg_0); il.Emit(OpCodes.Ldc_I4, d.Rd * 8); il.Emit(OpCodes.Add); il.Emit(OpCodes.Ldind_I8);
                            il.Emit(OpCodes.Stloc, _regs[d.Rd]!);
                        }
                        break;
                    }
            }
        }
    }
}
