using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using LiveMigration.Guest.Cpu.Jit;
using LiveMigration.Guest.Memory;

namespace LiveMigration.Guest.Cpu;

/// <summary>
/// The interpreter. Instructions are decoded once per page slot and cached; the loop keeps pc and
/// icount in locals and checks nothing but the icount limit per instruction. Anything that can change
/// interrupt state (CSR writes, MMIO, MRET, WFI) breaks out so the machine re-checks at a boundary.
/// Guest faults become traps, never host exceptions.
/// </summary>
internal sealed unsafe partial class Hart
{
    private readonly Machine _machine;
    private readonly CpuState* _s;
    private readonly GuestMemory _mem;
    private readonly BlockCache? _blocks;
    private bool _breakOut;

    public Hart(Machine machine, CpuState* state, BlockCompilation compilation, short compileThreshold)
    {
        _machine = machine;
        _s = state;
        _mem = machine.Memory;
        if (compilation != BlockCompilation.Off) _blocks = new BlockCache(_mem, compilation == BlockCompilation.Background, compileThreshold);
        _mem.PageTableWritten = OnPageTableWritten;
    }

    public void BreakOut() => _breakOut = true;

    // Post-copy: an instruction touched a page that cannot arrive now. It did not execute.
    private bool _stalled;
    // ...and the loop already counted it (the stall came from inside the instruction).
    private bool _uncount;

    /// <summary>True once after an Execute that stopped on an unavailable page.</summary>
    public bool TakeStall()
    {
        bool s = _stalled;
        _stalled = false;
        return s;
    }

    /// <summary>A slow path found its page absent and unobtainable: leave pc on the instruction.</summary>
    private ulong Stall(ulong pc)
    {
        _stalled = _uncount = _breakOut = true;
        return pc;
    }

    /// <summary>Selects the loop: physical addresses (M-mode, nothing to check) or the TLB path.</summary>
    public void Execute(ulong limit)
    {
        _breakOut = false;
        if (NeedsTranslation()) Run<Translated>(limit);
        else Run<Physical>(limit);
    }

    private interface IAddressing { static abstract bool Paged { get; } }
    private struct Physical : IAddressing { public static bool Paged => false; }
    private struct Translated : IAddressing { public static bool Paged => true; }

    /// <summary>A TLB hit for an access of <paramref name="size"/> bytes inside one page: its RAM offset.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Hit(TlbEntry* table, ulong a, int size, out ulong o)
    {
        TlbEntry* e = table + ((a >> GuestMemory.PageShift) & Tlb.Mask);
        o = a + e->Addend;
        // The entry at va's index never holds the next page: one compare also rules out a page cross.
        return e->Tag == (a + (ulong)(size - 1)) >> GuestMemory.PageShift;
    }

    /// <summary>True while the loop runs with translation (read by the slow paths).</summary>
    private bool _paged;
    private bool _triggersArmed;

    [SkipLocalsInit]
    private void Run<T>(ulong limit) where T : struct, IAddressing
    {
        CpuState* s = _s;
        ulong* x = s->X;
        ulong pc = s->Pc, icount = s->Icount;
        byte* ram = _mem.Ram;
        ulong ramBase = _mem.Base, ramSize = _mem.Size;
        byte[] fast = _mem.WriteFast;
        DecodedInsn[] code = null!;
        BlockEntry[] blocks = null!;
        BlockCache? blockCache = _blocks;
        byte* fastPtr = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(fast)); // pinned array
        ulong codeBase = 1; // never page-aligned, so no pc's page equals it: forces a lookup first
        var debug = _machine.Debug;
        bool checkBreakpoints = debug.HasBreakpoints;
        ulong resumeIcount = _machine.RunStartIcount;
        Func<ulong, bool>? isBreakpoint = checkBreakpoints ? debug.IsBreakpoint : null;
        // Loads take the fast path only below this offset; read watchpoints send all of them the slow way.
        ulong loadLimit = ramSize - 7;
        if (debug.WatchesReads) { loadLimit = 0; blockCache = null; }
        // Post-copy with pages still absent: every access checks its page, so no fast loads or blocks.
        bool absentPages = _mem.HasAbsentPages;
        if (absentPages) { loadLimit = 0; blockCache = null; }
        if (blockCache != null && blockCache.Generation != debug.Generation) blockCache.Flush(debug.Generation);
        if (blockCache != null && blockCache.HasCompleted) blockCache.InstallCompleted();
        short compileAt = blockCache?.Threshold ?? short.MaxValue;
        DecodedInsn crossPage;
        ulong codePhys = 0; // RAM offset of the code page
        _paged = T.Paged;
        TlbEntry* rtlb = null, wtlb = null, xtlb = null;
        if (T.Paged)
        {
            uint dataPriv = DataPriv;
            _triggersArmed = Triggers.AnyArmed(s, s->Priv);
            _noFill = debug.WatchesReads || absentPages || _triggersArmed;
            rtlb = _noFill ? _tlb.Empty : _tlb.Table(dataPriv, Access.Read);
            wtlb = _noFill ? _tlb.Empty : _tlb.Table(dataPriv, Access.Write);
            xtlb = _noFill ? _tlb.Empty : _tlb.Table(s->Priv, Access.Fetch);
            // Without a TLB to hit (every access must be checked) compiled code has no fast path to take.
            if (_noFill) blockCache = null;
        }

        while (icount < limit)
        {
            if (checkBreakpoints && icount != resumeIcount && debug.IsBreakpoint(pc))
            {
                debug.Pending ??= new Debug.DebugStop(false, pc, default, 0);
                break;
            }
            if (T.Paged && _triggersArmed && Triggers.ExecuteHit(s, s->Priv, pc))
            {
                pc = Trap(pc, Cause.Breakpoint, 0);
                icount++;
                limit = 0;
                continue;
            }
            if ((pc & ~(ulong)(GuestMemory.PageSize - 1)) != codeBase)
            {
                ulong off;
                if (T.Paged)
                {
                    if (!Hit(xtlb, pc, 2, out off))
                    {
                        ulong r = TranslateFetch(pc, out off);
                        if (r == StallCause) { _stalled = true; break; }
                        if (r != FaultNone)
                        {
                            pc = Trap(pc, r, pc);
                            icount++;
                            limit = 0;
                            continue;
                        }
                    }
                }
                else
                {
                    off = pc - ramBase;
                    if (off >= ramSize)
                    {
                        pc = Trap(pc, Cause.InstructionAccessFault, pc);
                        icount++;
                        limit = 0;
                        continue;
                    }
                }
                if (absentPages && !_mem.EnsurePresent(off & ~(ulong)(GuestMemory.PageSize - 1), 1))
                {
                    _stalled = true;
                    break;
                }
                codeBase = pc & ~(ulong)(GuestMemory.PageSize - 1);
                codePhys = off & ~(ulong)(GuestMemory.PageSize - 1);
                code = _mem.DecodeCache[off >> GuestMemory.PageShift] ?? _mem.CodePage((int)(off >> GuestMemory.PageShift));
                if (blockCache != null) blocks = blockCache.Page((int)(off >> GuestMemory.PageShift));
            }
            if (blockCache != null)
            {
                ref BlockEntry be = ref blocks[(pc & (GuestMemory.PageSize - 1)) >> 1];
                ulong tag = T.Paged ? codeBase | 1 : 0;
                if (be.Fn != null && be.Tag == tag)
                {
                    if (icount + (ulong)be.Count <= limit)
                    {
                        ulong done = be.Fn(x, ram, fastPtr, s, limit - icount, (byte*)rtlb);
                        icount += done & ~BlockCompiler.BailFlag;
                        pc = s->Pc;
                        if ((done & BlockCompiler.BailFlag) == 0) continue;
                        // The block stopped before an instruction it cannot finish: interpret that one.
                        if ((pc & ~(ulong)(GuestMemory.PageSize - 1)) != codeBase) continue;
                    }
                }
                else if (be.Hits >= 0 && ++be.Hits >= compileAt)
                {
                    ulong slotOffset = pc & (GuestMemory.PageSize - 1);
                    if (blockCache.Background)
                    {
                        var block = BlockCompiler.Decode(_mem, pc, codePhys + slotOffset, T.Paged, isBreakpoint);
                        if (block == null) be.Hits = -1;
                        else if (blockCache.Enqueue((int)(codePhys >> GuestMemory.PageShift), (int)(slotOffset >> 1), tag, block)) be.Hits = BlockCache.Queued;
                        else be.Hits = 0; // the compiler is busy: ask again after another threshold's worth
                    }
                    else if (BlockCompiler.TryCompile(_mem, pc, codePhys + slotOffset, T.Paged, isBreakpoint, out be.Fn, out be.Count, out int bytes))
                    {
                        be.Bytes = (ushort)bytes;
                        be.Tag = tag;
                        continue;
                    }
                    else be.Hits = -1;
                }
            }
            scoped ref DecodedInsn d = ref code[(pc & (GuestMemory.PageSize - 1)) >> 1];
        dispatch:
            switch (d.Op)
            {
                case Op.Undecoded:
                    DecodeSlot(ref d, codePhys + (pc & (GuestMemory.PageSize - 1)));
                    goto dispatch;
                case Op.CrossPage:
                    {
                        ulong r = FetchCrossPage(pc, codePhys + (pc & (GuestMemory.PageSize - 1)), out crossPage);
                        if (r == StallCause) { pc = Stall(pc); limit = 0; break; }
                        if (r != NoTrap) { pc = Trap(pc, r, pc + 2); limit = 0; break; }
                        d = ref crossPage;
                        goto dispatch;
                    }
                case Op.Lui: x[d.Rd] = (ulong)d.Imm; pc += d.Length; break;
                case Op.Auipc: x[d.Rd] = pc + (ulong)d.Imm; pc += d.Length; break;
                case Op.Jal: x[d.Rd] = pc + d.Length; pc += (ulong)d.Imm; break;
                case Op.Jalr:
                    {
                        ulong target = (x[d.Rs1] + (ulong)d.Imm) & ~1UL;
                        x[d.Rd] = pc + d.Length;
                        pc = target;
                        break;
                    }
                case Op.Beq: pc = x[d.Rs1] == x[d.Rs2] ? pc + (ulong)d.Imm : pc + d.Length; break;
                case Op.Bne: pc = x[d.Rs1] != x[d.Rs2] ? pc + (ulong)d.Imm : pc + d.Length; break;
                case Op.Blt: pc = (long)x[d.Rs1] < (long)x[d.Rs2] ? pc + (ulong)d.Imm : pc + d.Length; break;
                case Op.Bge: pc = (long)x[d.Rs1] >= (long)x[d.Rs2] ? pc + (ulong)d.Imm : pc + d.Length; break;
                case Op.Bltu: pc = x[d.Rs1] < x[d.Rs2] ? pc + (ulong)d.Imm : pc + d.Length; break;
                case Op.Bgeu: pc = x[d.Rs1] >= x[d.Rs2] ? pc + (ulong)d.Imm : pc + d.Length; break;

                case Op.Lb:
                    {
                        ulong a = x[d.Rs1] + (ulong)d.Imm, o;
                        if (T.Paged ? Hit(rtlb, a, 1, out o) : (o = a - ramBase) < loadLimit) { x[d.Rd] = (ulong)*(sbyte*)(ram + o); pc += d.Length; }
                        else { s->Pc = pc; s->Icount = icount; pc = LoadSlow(ref d, a, pc); if (_breakOut) limit = 0; }
                        break;
                    }
                case Op.Lh:
                    {
                        ulong a = x[d.Rs1] + (ulong)d.Imm, o;
                        if (T.Paged ? Hit(rtlb, a, 2, out o) : (o = a - ramBase) < loadLimit) { x[d.Rd] = (ulong)*(short*)(ram + o); pc += d.Length; }
                        else { s->Pc = pc; s->Icount = icount; pc = LoadSlow(ref d, a, pc); if (_breakOut) limit = 0; }
                        break;
                    }
                case Op.Lw:
                    {
                        ulong a = x[d.Rs1] + (ulong)d.Imm, o;
                        if (T.Paged ? Hit(rtlb, a, 4, out o) : (o = a - ramBase) < loadLimit) { x[d.Rd] = (ulong)*(int*)(ram + o); pc += d.Length; }
                        else { s->Pc = pc; s->Icount = icount; pc = LoadSlow(ref d, a, pc); if (_breakOut) limit = 0; }
                        break;
                    }
                case Op.Ld:
                    {
                        ulong a = x[d.Rs1] + (ulong)d.Imm, o;
                        if (T.Paged ? Hit(rtlb, a, 8, out o) : (o = a - ramBase) < loadLimit) { x[d.Rd] = *(ulong*)(ram + o); pc += d.Length; }
                        else { s->Pc = pc; s->Icount = icount; pc = LoadSlow(ref d, a, pc); if (_breakOut) limit = 0; }
                        break;
                    }
                case Op.Lbu:
                    {
                        ulong a = x[d.Rs1] + (ulong)d.Imm, o;
                        if (T.Paged ? Hit(rtlb, a, 1, out o) : (o = a - ramBase) < loadLimit) { x[d.Rd] = *(ram + o); pc += d.Length; }
                        else { s->Pc = pc; s->Icount = icount; pc = LoadSlow(ref d, a, pc); if (_breakOut) limit = 0; }
                        break;
                    }
                case Op.Lhu:
                    {
                        ulong a = x[d.Rs1] + (ulong)d.Imm, o;
                        if (T.Paged ? Hit(rtlb, a, 2, out o) : (o = a - ramBase) < loadLimit) { x[d.Rd] = *(ushort*)(ram + o); pc += d.Length; }
                        else { s->Pc = pc; s->Icount = icount; pc = LoadSlow(ref d, a, pc); if (_breakOut) limit = 0; }
                        break;
                    }
                case Op.Lwu:
                    {
                        ulong a = x[d.Rs1] + (ulong)d.Imm, o;
                        if (T.Paged ? Hit(rtlb, a, 4, out o) : (o = a - ramBase) < loadLimit) { x[d.Rd] = *(uint*)(ram + o); pc += d.Length; }
                        else { s->Pc = pc; s->Icount = icount; pc = LoadSlow(ref d, a, pc); if (_breakOut) limit = 0; }
                        break;
                    }

                case Op.Sb:
                    {
                        ulong a = x[d.Rs1] + (ulong)d.Imm, o;
                        if (T.Paged ? Hit(wtlb, a, 1, out o) && fast[o >> GuestMemory.PageShift] != 0 : (o = a - ramBase) <= ramSize - 1 && fast[o >> GuestMemory.PageShift] != 0) { *(byte*)(ram + o) = (byte)x[d.Rs2]; pc += d.Length; }
                        else { s->Pc = pc; s->Icount = icount; pc = StoreSlow(a, 1, x[d.Rs2], pc, d.Length); if (_breakOut) limit = 0; }
                        break;
                    }
                case Op.Sh:
                    {
                        ulong a = x[d.Rs1] + (ulong)d.Imm, o;
                        if (T.Paged ? Hit(wtlb, a, 2, out o) && fast[o >> GuestMemory.PageShift] != 0 : (o = a - ramBase) <= ramSize - 2 && fast[o >> GuestMemory.PageShift] != 0 && (o & (GuestMemory.PageSize - 1)) <= GuestMemory.PageSize - 2) { *(ushort*)(ram + o) = (ushort)x[d.Rs2]; pc += d.Length; }
                        else { s->Pc = pc; s->Icount = icount; pc = StoreSlow(a, 2, x[d.Rs2], pc, d.Length); if (_breakOut) limit = 0; }
                        break;
                    }
                case Op.Sw:
                    {
                        ulong a = x[d.Rs1] + (ulong)d.Imm, o;
                        if (T.Paged ? Hit(wtlb, a, 4, out o) && fast[o >> GuestMemory.PageShift] != 0 : (o = a - ramBase) <= ramSize - 4 && fast[o >> GuestMemory.PageShift] != 0 && (o & (GuestMemory.PageSize - 1)) <= GuestMemory.PageSize - 4) { *(uint*)(ram + o) = (uint)x[d.Rs2]; pc += d.Length; }
                        else { s->Pc = pc; s->Icount = icount; pc = StoreSlow(a, 4, x[d.Rs2], pc, d.Length); if (_breakOut) limit = 0; }
                        break;
                    }
                case Op.Sd:
                    {
                        ulong a = x[d.Rs1] + (ulong)d.Imm, o;
                        if (T.Paged ? Hit(wtlb, a, 8, out o) && fast[o >> GuestMemory.PageShift] != 0 : (o = a - ramBase) <= ramSize - 8 && fast[o >> GuestMemory.PageShift] != 0 && (o & (GuestMemory.PageSize - 1)) <= GuestMemory.PageSize - 8) { *(ulong*)(ram + o) = (ulong)x[d.Rs2]; pc += d.Length; }
                        else { s->Pc = pc; s->Icount = icount; pc = StoreSlow(a, 8, x[d.Rs2], pc, d.Length); if (_breakOut) limit = 0; }
                        break;
                    }

                case Op.Addi: x[d.Rd] = x[d.Rs1] + (ulong)d.Imm; pc += d.Length; break;
                case Op.Slti: x[d.Rd] = (long)x[d.Rs1] < d.Imm ? 1UL : 0; pc += d.Length; break;
                case Op.Sltiu: x[d.Rd] = x[d.Rs1] < (ulong)d.Imm ? 1UL : 0; pc += d.Length; break;
                case Op.Xori: x[d.Rd] = x[d.Rs1] ^ (ulong)d.Imm; pc += d.Length; break;
                case Op.Ori: x[d.Rd] = x[d.Rs1] | (ulong)d.Imm; pc += d.Length; break;
                case Op.Andi: x[d.Rd] = x[d.Rs1] & (ulong)d.Imm; pc += d.Length; break;
                case Op.Slli: x[d.Rd] = x[d.Rs1] << (int)d.Imm; pc += d.Length; break;
                case Op.Srli: x[d.Rd] = x[d.Rs1] >> (int)d.Imm; pc += d.Length; break;
                case Op.Srai: x[d.Rd] = (ulong)((long)x[d.Rs1] >> (int)d.Imm); pc += d.Length; break;

                case Op.Add: x[d.Rd] = x[d.Rs1] + x[d.Rs2]; pc += d.Length; break;
                case Op.Sub: x[d.Rd] = x[d.Rs1] - x[d.Rs2]; pc += d.Length; break;
                case Op.Sll: x[d.Rd] = x[d.Rs1] << (int)(x[d.Rs2] & 63); pc += d.Length; break;
                case Op.Slt: x[d.Rd] = (long)x[d.Rs1] < (long)x[d.Rs2] ? 1UL : 0; pc += d.Length; break;
                case Op.Sltu: x[d.Rd] = x[d.Rs1] < x[d.Rs2] ? 1UL : 0; pc += d.Length; break;
                case Op.Xor: x[d.Rd] = x[d.Rs1] ^ x[d.Rs2]; pc += d.Length; break;
                case Op.Srl: x[d.Rd] = x[d.Rs1] >> (int)(x[d.Rs2] & 63); pc += d.Length; break;
                case Op.Sra: x[d.Rd] = (ulong)((long)x[d.Rs1] >> (int)(x[d.Rs2] & 63)); pc += d.Length; break;
                case Op.Or: x[d.Rd] = x[d.Rs1] | x[d.Rs2]; pc += d.Length; break;
                case Op.And: x[d.Rd] = x[d.Rs1] & x[d.Rs2]; pc += d.Length; break;

                case Op.Addiw: x[d.Rd] = (ulong)(long)(int)(x[d.Rs1] + (ulong)d.Imm); pc += d.Length; break;
                case Op.Slliw: x[d.Rd] = (ulong)(long)((int)x[d.Rs1] << (int)d.Imm); pc += d.Length; break;
                case Op.Srliw: x[d.Rd] = (ulong)(long)(int)((uint)x[d.Rs1] >> (int)d.Imm); pc += d.Length; break;
                case Op.Sraiw: x[d.Rd] = (ulong)(long)((int)x[d.Rs1] >> (int)d.Imm); pc += d.Length; break;
                case Op.Addw: x[d.Rd] = (ulong)(long)(int)(x[d.Rs1] + x[d.Rs2]); pc += d.Length; break;
                case Op.Subw: x[d.Rd] = (ulong)(long)(int)(x[d.Rs1] - x[d.Rs2]); pc += d.Length; break;
                case Op.Sllw: x[d.Rd] = (ulong)(long)((int)x[d.Rs1] << (int)(x[d.Rs2] & 31)); pc += d.Length; break;
                case Op.Srlw: x[d.Rd] = (ulong)(long)(int)((uint)x[d.Rs1] >> (int)(x[d.Rs2] & 31)); pc += d.Length; break;
                case Op.Sraw: x[d.Rd] = (ulong)(long)((int)x[d.Rs1] >> (int)(x[d.Rs2] & 31)); pc += d.Length; break;

                case Op.Mul: x[d.Rd] = x[d.Rs1] * x[d.Rs2]; pc += d.Length; break;
                case Op.Mulh: x[d.Rd] = (ulong)Math.BigMul((long)x[d.Rs1], (long)x[d.Rs2], out _); pc += d.Length; break;
                case Op.Mulhu: x[d.Rd] = Math.BigMul(x[d.Rs1], x[d.Rs2], out _); pc += d.Length; break;
                case Op.Mulhsu: x[d.Rd] = ArithmeticOps.Mulhsu(x[d.Rs1], x[d.Rs2]); pc += d.Length; break;
                case Op.Div: x[d.Rd] = ArithmeticOps.Div(x[d.Rs1], x[d.Rs2]); pc += d.Length; break;
                case Op.Divu: x[d.Rd] = x[d.Rs2] == 0 ? ulong.MaxValue : x[d.Rs1] / x[d.Rs2]; pc += d.Length; break;
                case Op.Rem: x[d.Rd] = ArithmeticOps.Rem(x[d.Rs1], x[d.Rs2]); pc += d.Length; break;
                case Op.Remu: x[d.Rd] = x[d.Rs2] == 0 ? x[d.Rs1] : x[d.Rs1] % x[d.Rs2]; pc += d.Length; break;
                case Op.Mulw: x[d.Rd] = (ulong)(long)(int)((uint)x[d.Rs1] * (uint)x[d.Rs2]); pc += d.Length; break;
                case Op.Divw: x[d.Rd] = ArithmeticOps.Divw(x[d.Rs1], x[d.Rs2]); pc += d.Length; break;
                case Op.Divuw: x[d.Rd] = ArithmeticOps.Divuw(x[d.Rs1], x[d.Rs2]); pc += d.Length; break;
                case Op.Remw: x[d.Rd] = ArithmeticOps.Remw(x[d.Rs1], x[d.Rs2]); pc += d.Length; break;
                case Op.Remuw: x[d.Rd] = ArithmeticOps.Remuw(x[d.Rs1], x[d.Rs2]); pc += d.Length; break;

                case Op.Fence: pc += d.Length; break;
                case Op.FenceI: pc += d.Length; break; // stores already invalidate decoded code
                case Op.Ecall: pc = Trap(pc, Cause.EcallFromU + s->Priv, 0); limit = 0; break;
                case Op.Ebreak: pc = Trap(pc, Cause.Breakpoint, 0); limit = 0; break; // QEMU 7.2 leaves mtval 0
                case Op.Mret:
                    pc = s->Priv == Priv.M ? Mret() : Trap(pc, Cause.IllegalInstruction, RawBits(in d));
                    limit = 0;
                    break;
                case Op.Sret:
                    pc = s->Priv == Priv.M || (s->Priv == Priv.S && (s->Mstatus & Mstatus.TSR) == 0) ? Sret() : Trap(pc, Cause.IllegalInstruction, RawBits(in d));
                    limit = 0;
                    break;
                case Op.Wfi:
                    // U-mode never may; S-mode not while mstatus.TW is set (QEMU 7.2 traps at once, no time limit).
                    if (s->Priv == Priv.U || (s->Priv == Priv.S && (s->Mstatus & Mstatus.TW) != 0)) pc = Trap(pc, Cause.IllegalInstruction, RawBits(in d));
                    else { s->Waiting = 1; pc += d.Length; }
                    limit = 0;
                    break;
                case Op.SfenceVma:
                    if (s->Priv == Priv.U || (s->Priv == Priv.S && (s->Mstatus & Mstatus.TVM) != 0)) pc = Trap(pc, Cause.IllegalInstruction, RawBits(in d));
                    else { FlushTlb(); pc += d.Length; }
                    limit = 0;
                    break;

                case Op.Csrrw:
                case Op.Csrrs:
                case Op.Csrrc:
                case Op.Csrrwi:
                case Op.Csrrsi:
                case Op.Csrrci:
                    s->Pc = pc; s->Icount = icount;
                    if (ExecuteCsr(ref d)) pc += d.Length;
                    else pc = Trap(pc, Cause.IllegalInstruction, RawBits(in d));
                    limit = 0; // a CSR write may enable an interrupt
                    break;

                case Op.Illegal: pc = Trap(pc, Cause.IllegalInstruction, (ulong)d.Imm); limit = 0; break;

                case Op.Flw or Op.Fld or Op.Fsw or Op.Fsd:
                    s->Pc = pc; s->Icount = icount;
                    pc = ExecuteFpMemory(ref d, pc);
                    if (_breakOut) limit = 0;
                    break;
                case >= Op.FmaddS and <= Op.FmvXD:
                    if (ExecuteFp(ref d)) pc += d.Length;
                    else pc = Trap(pc, Cause.IllegalInstruction, IllegalBits(pc, d.Length));
                    break;

                default: // LR/SC and AMOs
                    {
                        s->Pc = pc; s->Icount = icount;
                        ulong cause = ExecuteAtomic(ref d, ram);
                        if (cause == StallCause) { pc = Stall(pc); limit = 0; }
                        else if (cause == NoTrap) pc += d.Length;
                        else { pc = Trap(pc, cause, x[d.Rs1]); limit = 0; }
                        break;
                    }
            }
            icount++;
        }

        if (_uncount) { icount--; _uncount = false; } // the stalled instruction was counted, not executed
        s->Pc = pc;
        s->Icount = icount;
    }

    private void DecodeSlot(ref DecodedInsn d, ulong off)
    {
        int page = (int)(off >> GuestMemory.PageShift);
        _mem.WriteFast[page] = 0; // from now on stores to this page must invalidate
        ushort low = *(ushort*)(_mem.Ram + off);
        if (Decoder.IsCompressed(low)) { d = Decoder.DecodeCompressed(low); return; }
        if ((off & (GuestMemory.PageSize - 1)) == GuestMemory.PageSize - 2) { d = new DecodedInsn { Op = Op.CrossPage }; return; }
        d = Decoder.Decode32(*(uint*)(_mem.Ram + off));
    }

    /// <summary>A 32-bit instruction whose upper half is on the next (virtual) page: fetched and decoded each time.</summary>
    private ulong FetchCrossPage(ulong pc, ulong lowOffset, out DecodedInsn insn)
    {
        insn = default;
        ulong high;
        if (_paged)
        {
            ulong r = TranslateFetch(pc + 2, out high);
            if (r != FaultNone) return r;
        }
        else
        {
            high = pc + 2 - _mem.Base;
            if (high + 2 > _mem.Size) return Cause.InstructionAccessFault;
        }
        if (!_mem.EnsurePresent(high, 2)) return StallCause;
        insn = Decoder.Decode32(*(ushort*)(_mem.Ram + lowOffset) | ((uint)*(ushort*)(_mem.Ram + high) << 16));
        return NoTrap;
    }

    /// <summary>The encoding of a system instruction (QEMU reports it in mtval when it is illegal).</summary>
    private static ulong RawBits(in DecodedInsn d)
    {
        uint rd = d.Rd == CpuState.SinkRegister ? 0u : d.Rd;
        return d.Op switch
        {
            Op.Mret => 0x30200073,
            Op.Sret => 0x10200073,
            Op.Wfi => 0x10500073,
            Op.SfenceVma => 0x12000073u | ((uint)d.Rs2 << 20) | ((uint)d.Rs1 << 15),
            _ => ((uint)d.Imm << 20) | ((uint)d.Rs1 << 15) | (CsrFunct3(d.Op) << 12) | (rd << 7) | 0x73,
        };
    }

    private static uint CsrFunct3(Op op) => op switch
    {
        Op.Csrrw => 1, Op.Csrrs => 2, Op.Csrrc => 3, Op.Csrrwi => 5, Op.Csrrsi => 6, _ => 7,
    };

    private void TriggersChanged() => _breakOut = true;
}
