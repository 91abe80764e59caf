namespace LiveMigration.Guest.Cpu;

/// <summary>
/// Debug triggers as QEMU 7.2 implements them: two, each an address match (mcontrol, type 2, or
/// mcontrol6, type 6) on execute, load or store in the modes its M/S/U bits name, whose action is
/// a breakpoint exception before the instruction or access. Writes of other types are ignored.
/// </summary>
internal static unsafe class Triggers
{
    public const int Count = 2;
    private const int Type2 = 2, Type6 = 6;
    /// <summary>tinfo: types 2 and 6 supported.</summary>
    public const ulong Info = (1UL << Type2) | (1UL << Type6);
    public const ulong Load = 1, Store = 2, Execute = 4, U = 1 << 3, S = 1 << 4, M = 1 << 6;
    private const ulong Type2SizeLo = 3UL << 16, Type2SizeHi = 3UL << 21, Type6Size = 0xFUL << 16;
    private const ulong Type6Vu = 1UL << 23, Type6Vs = 1UL << 24;

    public static int Type(ulong tdata1) => (int)(tdata1 >> 60);

    /// <summary>Reset value: an unarmed type-2 trigger.</summary>
    public const ulong ResetTdata1 = (ulong)Type2 << 60;

    /// <summary>The value tdata1 holds after a write: unsupported types leave it as it was (the caller keeps it).</summary>
    public static ulong LegalTdata1(ulong value, ulong old)
    {
        int type = Type(value);
        ulong keep = Load | Store | Execute | U | S | M;
        if (type == Type2) return ((ulong)Type2 << 60) | (value & (keep | Type2SizeLo | Type2SizeHi));
        if (type == Type6) return ((ulong)Type6 << 60) | (value & (keep | Type6Size | Type6Vu | Type6Vs));
        return old;
    }

    private static bool InMode(ulong tdata1, uint priv)
        => priv switch { Priv.M => (tdata1 & M) != 0, Priv.S => (tdata1 & S) != 0, _ => (tdata1 & U) != 0 };

    /// <summary>True when some trigger can fire in <paramref name="priv"/>: the interpreter then checks every access.</summary>
    public static bool AnyArmed(CpuState* s, uint priv)
    {
        for (int i = 0; i < Count; i++)
            if ((s->Tdata1[i] & (Load | Store | Execute)) != 0 && InMode(s->Tdata1[i], priv)) return true;
        return false;
    }

    public static bool ExecuteHit(CpuState* s, uint priv, ulong pc)
    {
        for (int i = 0; i < Count; i++)
            if ((s->Tdata1[i] & Execute) != 0 && InMode(s->Tdata1[i], priv) && s->Tdata2[i] == pc) return true;
        return false;
    }

    /// <summary>A load or store of [address, address + size) meets a data trigger (size "any" matches 8 bytes).</summary>
    public static bool AccessHit(CpuState* s, uint priv, ulong address, int size, bool store)
    {
        ulong kind = store ? Store : Load;
        for (int i = 0; i < Count; i++)
        {
            ulong t = s->Tdata1[i];
            if ((t & kind) == 0 || !InMode(t, priv)) continue;
            ulong at = s->Tdata2[i];
            ulong len = 8;
            if (address < at + len && at < address + (ulong)size) return true;
        }
        return false;
    }
}
