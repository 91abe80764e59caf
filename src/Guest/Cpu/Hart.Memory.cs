using System.Runtime.CompilerServices;
using LiveMigration.Guest.Memory;

namespace LiveMigration.Guest.Cpu;

/// <summary>The interpreter's slow paths: MMIO, faults, the write barrier's bookkeeping and atomics.</summary>
internal sealed unsafe partial class Hart
{
    private const ulong NoTrap = ulong.MaxValue;
    private const ulong StallCause = ulong.MaxValue - 1;

    private static int LoadSize(Op op) => op switch
    {
        Op.Lb or Op.Lbu => 1,
        Op.Lh or Op.Lhu => 2,
        Op.Lw or Op.Lwu => 4,
        _ => 8,
    };

    private static ulong Extend(Op op, ulong v) => op switch
    {
        Op.Lb => (ulong)(sbyte)v,
        Op.Lh => (ulong)(short)v,
        Op.Lw => (ulong)(int)v,
        Op.Lbu => (byte)v,
        Op.Lhu => (ushort)v,
        Op.Lwu => (uint)v,
        _ => v,
    };

    /// <summary>A load outside the fast path (translated when paging); returns the next pc (the trap vector on a fault).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong LoadSlow(ref DecodedInsn d, ulong address, ulong pc)
    {
        if (!TryLoad(address, LoadSize(d.Op), pc, out ulong v, out ulong next)) return next;
        _s->X[d.Rd] = Extend(d.Op, v);
        return pc + d.Length;
    }

    /// <summary>
    /// A load outside the fast path (translated when paging, RAM or device): true with the value, or
    /// false with the pc to go on at (the trap vector, or the same pc for a stall on an absent page).
    /// </summary>
    private bool TryLoad(ulong address, int size, ulong pc, out ulong value, out ulong next)
    {
        next = 0;
        ulong pa = address, pa2 = 0;
        int first = size;
        if (_paged)
        {
            value = 0;
            if (_triggersArmed && Triggers.AccessHit(_s, _s->Priv, address, size, store: false)) { next = Trap(pc, Cause.Breakpoint, address); return false; }
            ulong r = TranslateData(address, size, Access.Read, out pa, out pa2, out first, out ulong tval);
            if (r == StallCause) { next = Stall(pc); return false; }
            if (r != FaultNone) { next = Trap(pc, r, tval); return false; }
        }
        if (ReadPhysical(pa, pa2, first, size, out value, out bool stall))
        {
            if (stall) { next = Stall(pc); return false; }
            return true;
        }
        var device = _machine.FindDevice(pa);
        if (device != null && device.Read(pa - device.Base, size, out value))
        {
            _breakOut = true;
            return true;
        }
        next = Trap(pc, Cause.LoadAccessFault, address);
        return false;
    }

    /// <summary>A store outside the fast path (translated when paging); returns the next pc (the trap vector on a fault).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong StoreSlow(ulong address, int size, ulong value, ulong pc, int length)
    {
        ulong pa = address, pa2 = 0;
        int first = size;
        if (_paged)
        {
            if (_triggersArmed && Triggers.AccessHit(_s, _s->Priv, address, size, store: true)) return Trap(pc, Cause.Breakpoint, address);
            ulong r = TranslateData(address, size, Access.Write, out pa, out pa2, out first, out ulong tval);
            if (r == StallCause) return Stall(pc);
            if (r != FaultNone) return Trap(pc, r, tval);
        }
        if (WritePhysical(pa, pa2, first, size, value, out bool stall))
            return stall ? Stall(pc) : pc + (ulong)length;
        var device = _machine.FindDevice(pa);
        if (device != null && device.Write(pa - device.Base, size, value))
        {
            _breakOut = true;
            return pc + (ulong)length;
        }
        return Trap(pc, Cause.StoreAccessFault, address);
    }

    /// <summary>LR/SC and AMOs: RAM only, naturally aligned. Returns <see cref="NoTrap"/> or a cause.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private ulong ExecuteAtomic(ref DecodedInsn d, byte* ram)
    {
        ulong* x = _s->X;
        bool dword = d.Op >= Op.LrD;
        int size = dword ? 8 : 4;
        ulong address = x[d.Rs1];
        bool isLoad = d.Op is Op.LrW or Op.LrD;
        // QEMU 7.2 fails an SC without a matching reservation before touching memory, and reports
        // every misaligned atomic as a load-address-misaligned fault: we match it.
        if (d.Op is Op.ScW or Op.ScD && _s->Reservation != address)
        {
            _s->Reservation = ulong.MaxValue;
            x[d.Rd] = 1;
            return NoTrap;
        }
        if ((address & (ulong)(size - 1)) != 0) return Cause.LoadMisaligned;
        ulong pa = address;
        if (_paged)
        {
            if (_triggersArmed && Triggers.AccessHit(_s, _s->Priv, address, size, store: !isLoad)) return Cause.Breakpoint;
            ulong r = Translate(address, size, isLoad ? Access.Read : Access.Write, out pa);
            if (r != FaultNone) return r;
        }
        ulong o = pa - _mem.Base;
        if (pa < _mem.Base || o > _mem.Size - (ulong)size) return isLoad ? Cause.LoadAccessFault : Cause.StoreAccessFault;
        if (!_mem.EnsurePresent(o, size)) return StallCause;
        byte* p = ram + o;

        if (isLoad)
        {
            x[d.Rd] = dword ? *(ulong*)p : (ulong)*(int*)p;
            _s->Reservation = address;
            _s->ReservationValue = x[d.Rd];
            return NoTrap;
        }
        if (d.Op is Op.ScW or Op.ScD)
        {
            // QEMU 7.2 implements SC as a compare-and-swap against the value LR saw, at SC's width.
            ulong current = dword ? *(ulong*)p : (ulong)*(int*)p;
            bool ok = _s->Reservation == address && current == _s->ReservationValue;
            _s->Reservation = ulong.MaxValue;
            if (ok)
            {
                _mem.BeforeWrite(o, size);
                if (dword) *(ulong*)p = x[d.Rs2]; else *(uint*)p = (uint)x[d.Rs2];
            }
            x[d.Rd] = ok ? 0UL : 1UL;
            return NoTrap;
        }

        ulong src = x[d.Rs2];
        _mem.BeforeWrite(o, size);
        if (dword)
        {
            ulong old = *(ulong*)p;
            *(ulong*)p = d.Op switch
            {
                Op.AmoswapD => src,
                Op.AmoaddD => old + src,
                Op.AmoxorD => old ^ src,
                Op.AmoandD => old & src,
                Op.AmoorD => old | src,
                Op.AmominD => (long)old < (long)src ? old : src,
                Op.AmomaxD => (long)old > (long)src ? old : src,
                Op.AmominuD => old < src ? old : src,
                _ => old > src ? old : src,
            };
            x[d.Rd] = old;
        }
        else
        {
            uint old = *(uint*)p, s32 = (uint)src;
            *(uint*)p = d.Op switch
            {
                Op.AmoswapW => s32,
                Op.AmoaddW => old + s32,
                Op.AmoxorW => old ^ s32,
                Op.AmoandW => old & s32,
                Op.AmoorW => old | s32,
                Op.AmominW => (int)old < (int)s32 ? old : s32,
                Op.AmomaxW => (int)old > (int)s32 ? old : s32,
                Op.AmominuW => old < s32 ? old : s32,
                _ => old > s32 ? old : s32,
            };
            x[d.Rd] = (ulong)(int)old;
        }
        return NoTrap;
    }
}

/// <summary>M-extension corner cases: division by zero and signed overflow never trap in RISC-V.</summary>
internal static class ArithmeticOps
{
    public static ulong Mulh(ulong a, ulong b) => (ulong)Math.BigMul((long)a, (long)b, out _);
    public static ulong Mulhu(ulong a, ulong b) => Math.BigMul(a, b, out _);
    public static ulong Divu(ulong a, ulong b) => b == 0 ? ulong.MaxValue : a / b;
    public static ulong Remu(ulong a, ulong b) => b == 0 ? a : a % b;

    public static ulong Mulhsu(ulong a, ulong b)
    {
        ulong high = Math.BigMul(a, b, out _);
        return (long)a < 0 ? high - b : high;
    }

    public static ulong Div(ulong a, ulong b)
    {
        if (b == 0) return ulong.MaxValue;
        if ((long)a == long.MinValue && (long)b == -1) return a;
        return (ulong)((long)a / (long)b);
    }

    public static ulong Rem(ulong a, ulong b)
    {
        if (b == 0) return a;
        if ((long)a == long.MinValue && (long)b == -1) return 0;
        return (ulong)((long)a % (long)b);
    }

    public static ulong Divw(ulong a, ulong b)
    {
        int x = (int)a, y = (int)b;
        if (y == 0) return ulong.MaxValue;
        if (x == int.MinValue && y == -1) return (ulong)(long)x;
        return (ulong)(long)(x / y);
    }

    public static ulong Divuw(ulong a, ulong b)
    {
        uint x = (uint)a, y = (uint)b;
        return y == 0 ? ulong.MaxValue : (ulong)(long)(int)(x / y);
    }

    public static ulong Remw(ulong a, ulong b)
    {
        int x = (int)a, y = (int)b;
        if (y == 0) return (ulong)(long)x;
        if (x == int.MinValue && y == -1) return 0;
        return (ulong)(long)(x % y);
    }

    public static ulong Remuw(ulong a, ulong b)
    {
        uint x = (uint)a, y = (uint)b;
        return y == 0 ? (ulong)(long)(int)x : (ulong)(long)(int)(x % y);
    }
}
