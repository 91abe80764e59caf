using System.Reflection;
using System.Reflection.Emit;
using LiveMigration.Guest.Memory;

namespace LiveMigration.Guest.Cpu.Jit;

/// <summary>
/// Translates a superblock of simple instructions to IL. A block holds ALU ops, loads, stores and
/// conditional branches (a taken branch leaves the block) and ends at a jump (included), at the first
/// instruction it does not compile (CSR, system, atomics: left to the interpreter), at the page end,
/// or after <see cref="MaxInstructions"/>. A branch or jump to an instruction inside the block stays in
/// the compiled code (backwards only while the instruction budget allows), so hot loops never return to
/// the dispatcher. The retired count is dynamic: at static position m it is done + m, where a taken
/// internal branch from k to j adds k + 1 - j to done.
/// Every load and store keeps only its RAM fast path; anything else (MMIO, a fault, the write
/// barrier) bails out *before* the instruction, returning how many completed and leaving s->Pc at
/// the bailing instruction, which the interpreter then executes. So a block never has to undo.
/// Registers live in CpuState.X; x0 reads fold to 0 and writes to x0 go to the sink slot.
/// </summary>
internal static unsafe partial class BlockCompiler
{
    public const int MaxInstructions = 64;

    private static readonly FieldInfo PcField = typeof(CpuState).GetField(nameof(CpuState.Pc))!;
    private static readonly Type[] Parameters = [typeof(ulong*), typeof(byte*), typeof(byte*), typeof(CpuState*), typeof(ulong), typeof(byte*)];

    /// <summary>A budget no dispatcher passes (it never exceeds a slice): the block returns 0 untouched, after the JIT compiled it.</summary>
    public const ulong WarmUpBudget = ulong.MaxValue;

    /// <summary>Set in a block's result when it stopped before an instruction the interpreter must run.</summary>
    public const ulong BailFlag = 1UL << 63;

    public static bool IsTerminator(Op op) => op is Op.Jal or Op.Jalr;

    public static bool IsBranch(Op op) => op is >= Op.Beq and <= Op.Bgeu;

    private static bool WritesRd(Op op) => !IsBranch(op) && op is not (Op.Sb or Op.Sh or Op.Sw or Op.Sd or Op.Fence) && (!IsFp(op) || FpWritesX(op));

    public static bool IsCompilable(Op op) => op is >= Op.Lui and <= Op.Remuw or Op.Fence || IsFp(op);

    /// <summary>Decodes and compiles the block at <paramref name="pc"/>; returns false when its first instruction is not compilable.</summary>
    public static bool TryCompile(GuestMemory mem, ulong pc, ulong ramOffset, bool translated, Func<ulong, bool>? isBreakpoint, out BlockFn? fn, out int count, out int bytes)
    {
        fn = null;
        var block = Decode(mem, pc, ramOffset, translated, isBreakpoint);
        count = block?.Insns.Count ?? 0;
        bytes = block?.Bytes ?? 0;
        if (block == null) return false;
        fn = block.Compile();
        return true;
    }

    /// <summary>Reads the block at <paramref name="pc"/> from RAM; null when its first instruction is not compilable.</summary>
    /// <remarks>
    /// <paramref name="ramOffset"/> is where pc's instruction lies in RAM (pc itself is virtual when
    /// <paramref name="translated"/>: loads and stores then go through the TLB). What it returns no
    /// longer touches the machine, so it may be compiled on another thread.
    /// </remarks>
    public static DecodedBlock? Decode(GuestMemory mem, ulong pc, ulong ramOffset, bool translated, Func<ulong, bool>? isBreakpoint)
    {
        var insns = new List<(DecodedInsn D, ulong Pc)>();
        ulong pageEnd = (pc | (GuestMemory.PageSize - 1)) + 1;
        ulong at = pc;
        while (insns.Count < MaxInstructions && at < pageEnd)
        {
            ulong off = ramOffset + (at - pc);
            ushort low = *(ushort*)(mem.Ram + off);
            if (!Decoder.IsCompressed(low) && at + 4 > pageEnd) break; // straddles the page
            var d = Decoder.Decode(Decoder.IsCompressed(low) ? low : *(uint*)(mem.Ram + off));
            if (!IsCompilable(d.Op)) break;
            if (insns.Count > 0 && isBreakpoint != null && isBreakpoint(at)) break; // a breakpoint starts a block
            insns.Add((d, at));
            at += d.Length;
            if (IsTerminator(d.Op)) break;
        }
        if (insns.Count == 0) return null;
        return new DecodedBlock(insns, at, isBreakpoint != null && isBreakpoint(pc), translated, mem.Base, mem.Size);
    }

    /// <summary>A block's instructions as read from RAM, with what emitting it needs to know of the machine.</summary>
    internal sealed record DecodedBlock(List<(DecodedInsn D, ulong Pc)> Insns, ulong EndPc, bool StartIsBreakpoint, bool Translated, ulong RamBase, ulong RamSize)
    {
        public int Bytes => (int)(EndPc - Insns[0].Pc);

        public BlockFn Compile() => Emit(this);
    }

    private static BlockFn Emit(DecodedBlock block)
    {
        var (insns, endPc, startIsBreakpoint, translated) = (block.Insns, block.EndPc, block.StartIsBreakpoint, block.Translated);
        var method = new DynamicMethod($"block_{insns[0].Pc:x}", typeof(ulong), Parameters, typeof(BlockCompiler).Module, skipVisibility: true);
        var il = method.GetILGenerator();
        // budget = WarmUpBudget returns at once: the background compiler calls it so the JIT runs on its thread.
        var body = il.DefineLabel();
        il.Emit(OpCodes.Ldarg, 4); il.Emit(OpCodes.Ldc_I8, unchecked((long)WarmUpBudget)); il.Emit(OpCodes.Bne_Un, body);
        il.Emit(OpCodes.Ldc_I8, 0L); il.Emit(OpCodes.Ret);
        il.MarkLabel(body);
        var offset = il.DeclareLocal(typeof(ulong));
        var target = il.DeclareLocal(typeof(ulong));
        var bails = new Label[insns.Count];
        for (int i = 0; i < bails.Length; i++) bails[i] = il.DefineLabel();
        var usedBails = new bool[insns.Count];
        var e = new Emitter(il, block.RamBase, block.RamSize, insns, translated);
        var taken = new List<(Label Label, ulong Target, int Completed)>();
        var positions = new Dictionary<ulong, int>();
        // A jump back to a breakpointed start must leave, so the dispatcher sees the breakpoint.
        for (int k = startIsBreakpoint ? 1 : 0; k < insns.Count; k++) positions[insns[k].Pc] = k;
        var insnLabels = new Label[insns.Count];
        for (int k = 0; k < insns.Count; k++) insnLabels[k] = il.DefineLabel();

        for (int k = 0; k < insns.Count; k++)
        {
            var (d, pc) = insns[k];
            int n = k + 1;
            il.MarkLabel(insnLabels[k]);
            switch (d.Op)
            {
                case Op.Lui: e.SetReg(d.Rd, () => e.Const((ulong)d.Imm)); break;
                case Op.Auipc: e.SetReg(d.Rd, () => e.Const(pc + (ulong)d.Imm)); break;
                case Op.Fence: break;

                case Op.Addi: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); e.Const((ulong)d.Imm); il.Emit(OpCodes.Add); }); break;
                case Op.Xori: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); e.Const((ulong)d.Imm); il.Emit(OpCodes.Xor); }); break;
                case Op.Ori: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); e.Const((ulong)d.Imm); il.Emit(OpCodes.Or); }); break;
                case Op.Andi: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); e.Const((ulong)d.Imm); il.Emit(OpCodes.And); }); break;
                case Op.Slti: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); e.Const((ulong)d.Imm); il.Emit(OpCodes.Clt); il.Emit(OpCodes.Conv_U8); }); break;
                case Op.Sltiu: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); e.Const((ulong)d.Imm); il.Emit(OpCodes.Clt_Un); il.Emit(OpCodes.Conv_U8); }); break;
                case Op.Slli: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); il.Emit(OpCodes.Ldc_I4, (int)d.Imm); il.Emit(OpCodes.Shl); }); break;
                case Op.Srli: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); il.Emit(OpCodes.Ldc_I4, (int)d.Imm); il.Emit(OpCodes.Shr_Un); }); break;
                case Op.Srai: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); il.Emit(OpCodes.Ldc_I4, (int)d.Imm); il.Emit(OpCodes.Shr); }); break;

                case Op.Add: e.Binary(d, OpCodes.Add); break;
                case Op.Sub: e.Binary(d, OpCodes.Sub); break;
                case Op.Xor: e.Binary(d, OpCodes.Xor); break;
                case Op.Or: e.Binary(d, OpCodes.Or); break;
                case Op.And: e.Binary(d, OpCodes.And); break;
                case Op.Mul: e.Binary(d, OpCodes.Mul); break;
                case Op.Slt: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); e.Reg(d.Rs2); il.Emit(OpCodes.Clt); il.Emit(OpCodes.Conv_U8); }); break;
                case Op.Sltu: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); e.Reg(d.Rs2); il.Emit(OpCodes.Clt_Un); il.Emit(OpCodes.Conv_U8); }); break;
                case Op.Sll: e.Shift(d, OpCodes.Shl, 63); break;
                case Op.Srl: e.Shift(d, OpCodes.Shr_Un, 63); break;
                case Op.Sra: e.Shift(d, OpCodes.Shr, 63); break;

                case Op.Addiw: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); e.Const((ulong)d.Imm); il.Emit(OpCodes.Add); il.Emit(OpCodes.Conv_I4); il.Emit(OpCodes.Conv_I8); }); break;
                case Op.Slliw: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); il.Emit(OpCodes.Conv_I4); il.Emit(OpCodes.Ldc_I4, (int)d.Imm); il.Emit(OpCodes.Shl); il.Emit(OpCodes.Conv_I8); }); break;
                case Op.Srliw: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); il.Emit(OpCodes.Conv_U4); il.Emit(OpCodes.Ldc_I4, (int)d.Imm); il.Emit(OpCodes.Shr_Un); il.Emit(OpCodes.Conv_I8); }); break;
                case Op.Sraiw: e.SetReg(d.Rd, () => { e.Reg(d.Rs1); il.Emit(OpCodes.Conv_I4); il.Emit(OpCodes.Ldc_I4, (int)d.Imm); il.Emit(OpCodes.Shr); il.Emit(OpCodes.Conv_I8); }); break;
                case Op.Addw: e.Word(d, OpCodes.Add); break;
                case Op.Subw: e.Word(d, OpCodes.Sub); break;
                case Op.Mulw: e.Word(d, OpCodes.Mul); break;
                case Op.Sllw: e.WordShift(d, OpCodes.Shl, OpCodes.Conv_I4); break;
                case Op.Srlw: e.WordShift(d, OpCodes.Shr_Un, OpCodes.Conv_U4); break;
                case Op.Sraw: e.WordShift(d, OpCodes.Shr, OpCodes.Conv_I4); break;

                case Op.Mulh: e.Call(d, nameof(ArithmeticOps.Mulh)); break;
                case Op.Mulhu: e.Call(d, nameof(ArithmeticOps.Mulhu)); break;
                case Op.Mulhsu: e.Call(d, nameof(ArithmeticOps.Mulhsu)); break;
                case Op.Div: e.Call(d, nameof(ArithmeticOps.Div)); break;
                case Op.Divu: e.Call(d, nameof(ArithmeticOps.Divu)); break;
                case Op.Rem: e.Call(d, nameof(ArithmeticOps.Rem)); break;
                case Op.Remu: e.Call(d, nameof(ArithmeticOps.Remu)); break;
                case Op.Divw: e.Call(d, nameof(ArithmeticOps.Divw)); break;
                case Op.Divuw: e.Call(d, nameof(ArithmeticOps.Divuw)); break;
                case Op.Remw: e.Call(d, nameof(ArithmeticOps.Remw)); break;
                case Op.Remuw: e.Call(d, nameof(ArithmeticOps.Remuw)); break;

                case Op.Lb: e.Load(d, offset, bails[k], 1, OpCodes.Ldind_I1, signed: true); usedBails[k] = true; break;
                case Op.Lh: e.Load(d, offset, bails[k], 2, OpCodes.Ldind_I2, signed: true); usedBails[k] = true; break;
                case Op.Lw: e.Load(d, offset, bails[k], 4, OpCodes.Ldind_I4, signed: true); usedBails[k] = true; break;
                case Op.Ld: e.Load(d, offset, bails[k], 8, OpCodes.Ldind_I8, signed: true); usedBails[k] = true; break;
                case Op.Lbu: e.Load(d, offset, bails[k], 1, OpCodes.Ldind_U1, signed: false); usedBails[k] = true; break;
                case Op.Lhu: e.Load(d, offset, bails[k], 2, OpCodes.Ldind_U2, signed: false); usedBails[k] = true; break;
                case Op.Lwu: e.Load(d, offset, bails[k], 4, OpCodes.Ldind_U4, signed: false); usedBails[k] = true; break;
                case Op.Sb: e.Store(d, offset, bails[k], 1, OpCodes.Stind_I1); usedBails[k] = true; break;
                case Op.Sh: e.Store(d, offset, bails[k], 2, OpCodes.Stind_I2); usedBails[k] = true; break;
                case Op.Sw: e.Store(d, offset, bails[k], 4, OpCodes.Stind_I4); usedBails[k] = true; break;
                case Op.Sd: e.Store(d, offset, bails[k], 8, OpCodes.Stind_I8); usedBails[k] = true; break;
                case >= Op.Flw and <= Op.FmvXD: e.Fp(d, offset, bails[k]); usedBails[k] = true; break;

                case Op.Jal:
                    e.SetReg(d.Rd, () => e.Const(pc + d.Length));
                    e.GoTo(pc + (ulong)d.Imm, n, positions, insnLabels, insns.Count);
                    break;
                case Op.Jalr:
                    e.Reg(d.Rs1); e.Const((ulong)d.Imm); il.Emit(OpCodes.Add); e.Const(~1UL); il.Emit(OpCodes.And);
                    il.Emit(OpCodes.Stloc, target); // before rd is written: rd may be rs1
                    e.SetReg(d.Rd, () => e.Const(pc + d.Length));
                    e.WriteBack();
                    il.Emit(OpCodes.Ldarg_3); il.Emit(OpCodes.Ldloc, target); il.Emit(OpCodes.Stfld, PcField);
                    e.Return(n, 0);
                    break;
                case Op.Beq: taken.Add(e.Branch(d, pc, n, OpCodes.Beq)); break;
                case Op.Bne: taken.Add(e.Branch(d, pc, n, OpCodes.Bne_Un)); break;
                case Op.Blt: taken.Add(e.Branch(d, pc, n, OpCodes.Blt)); break;
                case Op.Bge: taken.Add(e.Branch(d, pc, n, OpCodes.Bge)); break;
                case Op.Bltu: taken.Add(e.Branch(d, pc, n, OpCodes.Blt_Un)); break;
                case Op.Bgeu: taken.Add(e.Branch(d, pc, n, OpCodes.Bge_Un)); break;
                default: throw new InvalidOperationException($"op {d.Op} is not compilable");
            }
        }
        if (!IsTerminator(insns[^1].D.Op)) e.Exit(endPc, insns.Count);

        foreach (var (label, destination, completed) in taken)
        {
            il.MarkLabel(label);
            e.GoTo(destination, completed, positions, insnLabels, insns.Count);
        }

        for (int k = 0; k < insns.Count; k++)
        {
            if (!usedBails[k]) continue;
            il.MarkLabel(bails[k]);
            e.Exit(insns[k].Pc, k, BailFlag);
        }
        return method.CreateDelegate<BlockFn>();
    }

    /// <summary>
    /// IL fragments shared by the op cases. Guest registers the block touches live in IL locals (so
    /// the .NET JIT can keep them in host registers): loaded once on entry, written back at each exit
    /// — only those written before that exit.
    /// </summary>
    private sealed partial class Emitter
    {
        private readonly ILGenerator il;
        private readonly ulong _ramBase, _ramSize;
        private readonly bool _translated;
        private readonly LocalBuilder _va, _entry;
        private readonly LocalBuilder?[] _regs = new LocalBuilder?[CpuState.RegisterSlots];
        /// <summary>Correction from static position to instructions retired (see the class comment).</summary>
        private readonly LocalBuilder _done;

        /// <summary>
        /// Every register the block writes. Exits write all of them back: the locals always hold the
        /// current values, and after a trip round a self-loop "written so far in this pass" is not enough.
        /// </summary>
        public ulong Written { get; }

        public Emitter(ILGenerator il, ulong ramBase, ulong ramSize, List<(DecodedInsn D, ulong Pc)> insns, bool translated)
        {
            this.il = il;
            _ramBase = ramBase;
            _ramSize = ramSize;
            _translated = translated;
            _va = il.DeclareLocal(typeof(ulong));
            _entry = il.DeclareLocal(typeof(byte*));
            foreach (var (d, _) in insns)
            {
                foreach (int r in new[] { d.Rd, d.Rs1, d.Rs2 })
                    if (r != 0 && r != CpuState.SinkRegister && _regs[r] == null) _regs[r] = il.DeclareLocal(typeof(ulong));
                if (d.Rd != CpuState.SinkRegister && d.Rd != 0 && WritesRd(d.Op)) Written |= 1UL << d.Rd;
            }
            for (int r = 1; r < 32; r++)
            {
                if (_regs[r] == null) continue;
                il.Emit(OpCodes.Ldarg_0); il.Emit(OpCodes.Ldc_I4, r * 8); il.Emit(OpCodes.Add); il.Emit(OpCodes.Ldind_I8);
                il.Emit(OpCodes.Stloc, _regs[r]!);
            }
            _done = il.DeclareLocal(typeof(ulong));
        }

        /// <summary>Returns done + completed (with flags), the count of instructions this call retired.</summary>
        public void Return(int completed, ulong flags)
        {
            il.Emit(OpCodes.Ldloc, _done);
            Const((ulong)(uint)completed | flags);
            il.Emit(OpCodes.Add);
            il.Emit(OpCodes.Ret);
        }

        /// <summary>
        /// Control goes to <paramref name="target"/> after <paramref name="completed"/> static instructions:
        /// inside the block it jumps there (backwards only while a whole pass still fits the budget),
        /// otherwise it leaves.
        /// </summary>
        public void GoTo(ulong target, int completed, Dictionary<ulong, int> positions, Label[] labels, int blockLength)
        {
            if (!positions.TryGetValue(target, out int j)) { Exit(target, completed); return; }
            var exit = il.DefineLabel();
            if (j < completed)
            {
                // budget - (done + completed) >= blockLength - j, else leave
                il.Emit(OpCodes.Ldarg, 4); il.Emit(OpCodes.Ldloc, _done); Const((ulong)completed); il.Emit(OpCodes.Add); il.Emit(OpCodes.Sub);
                Const((ulong)(blockLength - j)); il.Emit(OpCodes.Blt_Un, exit);
            }
            il.Emit(OpCodes.Ldloc, _done); Const((ulong)(long)(completed - j)); il.Emit(OpCodes.Add); il.Emit(OpCodes.Stloc, _done);
            il.Emit(OpCodes.Br, labels[j]);
            il.MarkLabel(exit);
            Exit(target, completed);
        }

        public void Const(ulong v) => il.Emit(OpCodes.Ldc_I8, (long)v);

        public void Reg(int r)
        {
            if (r == 0) { Const(0); return; }
            il.Emit(OpCodes.Ldloc, _regs[r]!);
        }

        public void SetReg(int rd, Action value)
        {
            value();
            if (rd == CpuState.SinkRegister) { il.Emit(OpCodes.Pop); return; }
            il.Emit(OpCodes.Stloc, _regs[rd]!);
        }

        public void WriteBack()
        {
            for (int r = 1; r < 32; r++)
            {
                if ((Written & (1UL << r)) == 0) continue;
                il.Emit(OpCodes.Ldarg_0); il.Emit(OpCodes.Ldc_I4, r * 8); il.Emit(OpCodes.Add);
                il.Emit(OpCodes.Ldloc, _regs[r]!); il.Emit(OpCodes.Stind_I8);
            }
        }

        public void Binary(DecodedInsn d, OpCode op) => SetReg(d.Rd, () => { Reg(d.Rs1); Reg(d.Rs2); il.Emit(op); });

        public void Shift(DecodedInsn d, OpCode op, int mask) => SetReg(d.Rd, () =>
        {
            Reg(d.Rs1); Reg(d.Rs2); il.Emit(OpCodes.Conv_I4); il.Emit(OpCodes.Ldc_I4, mask); il.Emit(OpCodes.And); il.Emit(op);
        });

        public void Word(DecodedInsn d, OpCode op) => SetReg(d.Rd, () =>
        {
            Reg(d.Rs1); il.Emit(OpCodes.Conv_I4); Reg(d.Rs2); il.Emit(OpCodes.Conv_I4); il.Emit(op); il.Emit(OpCodes.Conv_I8);
        });

        public void WordShift(DecodedInsn d, OpCode op, OpCode narrow) => SetReg(d.Rd, () =>
        {
            Reg(d.Rs1); il.Emit(narrow); Reg(d.Rs2); il.Emit(OpCodes.Conv_I4); il.Emit(OpCodes.Ldc_I4, 31); il.Emit(OpCodes.And);
            il.Emit(op); il.Emit(OpCodes.Conv_I4); il.Emit(OpCodes.Conv_I8);
        });

        public void Call(DecodedInsn d, string helper) => SetReg(d.Rd, () =>
        {
            Reg(d.Rs1); Reg(d.Rs2);
            il.Emit(OpCodes.Call, typeof(ArithmeticOps).GetMethod(helper, BindingFlags.Public | BindingFlags.Static)!);
        });

        /// <summary>
        /// offset = x[rs1] + imm - ramBase; bail unless the access lies inside RAM. Translated: the TLB
        /// entry of the page must match and the access stay in the page, offset = va + its addend.
        /// </summary>
        internal void RamOffset(DecodedInsn d, LocalBuilder offset, Label bail, int size, bool write = false)
        {
            if (_translated) { TlbOffset(d, offset, bail, size, write); return; }
            Reg(d.Rs1); Const((ulong)d.Imm); il.Emit(OpCodes.Add); Const(_ramBase); il.Emit(OpCodes.Sub);
            il.Emit(OpCodes.Stloc, offset);
            il.Emit(OpCodes.Ldloc, offset); Const(_ramSize - (ulong)size); il.Emit(OpCodes.Bgt_Un, bail);
        }

        private void TlbOffset(DecodedInsn d, LocalBuilder offset, Label bail, int size, bool write)
        {
            Reg(d.Rs1); Const((ulong)d.Imm); il.Emit(OpCodes.Add); il.Emit(OpCodes.Stloc, _va);
            // The table's superpage region first: offset = va - region.Va, inside when below its limit.
            int table = write ? Tlb.TableBytes : 0, region = table + Tlb.RegionOffset;
            var pageLookup = il.DefineLabel();
            var found = il.DefineLabel();
            il.Emit(OpCodes.Ldloc, _va); TlbField(region); il.Emit(OpCodes.Sub); il.Emit(OpCodes.Stloc, offset);
            il.Emit(OpCodes.Ldloc, offset); TlbField(region + 8); il.Emit(OpCodes.Bge_Un, pageLookup);
            il.Emit(OpCodes.Ldloc, offset); TlbField(region + 16); il.Emit(OpCodes.Add); il.Emit(OpCodes.Stloc, offset);
            il.Emit(OpCodes.Br, found);
            il.MarkLabel(pageLookup);
            il.Emit(OpCodes.Ldarg, 5);
            il.Emit(OpCodes.Ldloc, _va); il.Emit(OpCodes.Ldc_I4, GuestMemory.PageShift); il.Emit(OpCodes.Shr_Un);
            Const(Tlb.Mask); il.Emit(OpCodes.And); Const((ulong)sizeof(TlbEntry)); il.Emit(OpCodes.Mul);
            if (write) { Const((ulong)table); il.Emit(OpCodes.Add); }
            il.Emit(OpCodes.Conv_U); il.Emit(OpCodes.Add); il.Emit(OpCodes.Stloc, _entry);
            // One compare for the page and the page cross: the entry indexed by va's page holds only
            // pages with that index, never the next page, so the tag equals the page of the access's
            // last byte only when that page is va's own.
            il.Emit(OpCodes.Ldloc, _entry); il.Emit(OpCodes.Ldind_I8);
            il.Emit(OpCodes.Ldloc, _va);
            if (size > 1) { Const((ulong)(size - 1)); il.Emit(OpCodes.Add); }
            il.Emit(OpCodes.Ldc_I4, GuestMemory.PageShift); il.Emit(OpCodes.Shr_Un);
            il.Emit(OpCodes.Bne_Un, bail);
            il.Emit(OpCodes.Ldloc, _va);
            il.Emit(OpCodes.Ldloc, _entry); il.Emit(OpCodes.Ldc_I4, 8); il.Emit(OpCodes.Add); il.Emit(OpCodes.Ldind_I8);
            il.Emit(OpCodes.Add); il.Emit(OpCodes.Stloc, offset);
            il.MarkLabel(found);
        }

        /// <summary>Loads the 8-byte field <paramref name="bytes"/> past the read table (argument 5).</summary>
        private void TlbField(int bytes)
        {
            il.Emit(OpCodes.Ldarg, 5); il.Emit(OpCodes.Ldc_I4, bytes); il.Emit(OpCodes.Add); il.Emit(OpCodes.Ldind_I8);
        }

        public void Load(DecodedInsn d, LocalBuilder offset, Label bail, int size, OpCode load, bool signed)
        {
            RamOffset(d, offset, bail, size);
            SetReg(d.Rd, () =>
            {
                il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldloc, offset); il.Emit(OpCodes.Conv_U); il.Emit(OpCodes.Add);
                il.Emit(load);
                if (size < 8) il.Emit(signed ? OpCodes.Conv_I8 : OpCodes.Conv_U8);
            });
        }

        public void Store(DecodedInsn d, LocalBuilder offset, Label bail, int size, OpCode store, Action? value = null)
        {
            RamOffset(d, offset, bail, size, write: true);
            // The write barrier: bail unless stores to this page need no bookkeeping.
            il.Emit(OpCodes.Ldarg_2); il.Emit(OpCodes.Ldloc, offset); il.Emit(OpCodes.Ldc_I4, GuestMemory.PageShift); il.Emit(OpCodes.Shr_Un);
            il.Emit(OpCodes.Conv_U); il.Emit(OpCodes.Add); il.Emit(OpCodes.Ldind_U1); il.Emit(OpCodes.Brfalse, bail);
            if (size > 1) // the barrier above is one page's: a store into the next needs its own check
            {
                il.Emit(OpCodes.Ldloc, offset); Const(GuestMemory.PageSize - 1); il.Emit(OpCodes.And);
                Const((ulong)(GuestMemory.PageSize - size)); il.Emit(OpCodes.Bgt_Un, bail);
            }
            il.Emit(OpCodes.Ldarg_1); il.Emit(OpCodes.Ldloc, offset); il.Emit(OpCodes.Conv_U); il.Emit(OpCodes.Add);
            if (value != null) value(); else Reg(d.Rs2);
            if (size < 8) il.Emit(OpCodes.Conv_U4);
            il.Emit(store);
        }

        /// <summary>Falls through when not taken; the taken side is emitted later as an exit (or loop).</summary>
        public (Label, ulong, int) Branch(DecodedInsn d, ulong pc, int n, OpCode op)
        {
            var taken = il.DefineLabel();
            Reg(d.Rs1); Reg(d.Rs2); il.Emit(op, taken);
            return (taken, pc + (ulong)d.Imm, n);
        }

        public void Exit(ulong nextPc, int completed, ulong flags = 0)
        {
            WriteBack();
            il.Emit(OpCodes.Ldarg_3); Const(nextPc); il.Emit(OpCodes.Stfld, PcField);
            Return(completed, flags);
        }
    }
}
