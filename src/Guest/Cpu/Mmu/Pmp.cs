namespace LiveMigration.Guest.Cpu;

/// <summary>
/// Physical memory protection as QEMU 7.2 has it: 16 entries, OFF/TOR/NA4/NAPOT, lock bits,
/// granularity 4 bytes (pmpaddr keeps every bit written), cfg bytes stored as written.
/// With no active entry M-mode may do anything and S/U nothing; a locked entry binds M too.
/// Results are computed per page for the TLB: a page one entry covers completely gets that
/// entry's permissions cached; a page an entry cuts is checked on every access.
/// </summary>
internal static unsafe class Pmp
{
    public const int Entries = 16;
    public const byte R = 1, W = 2, X = 4, Lock = 0x80;
    private const int ModeShift = 3;
    private const int Off = 0, Tor = 1, Na4 = 2, Napot = 3;
    /// <summary>Result flag: the permissions hold for the whole page asked about.</summary>
    public const int WholePage = 8;
    public const int AllPermissions = R | W | X;

    private static int Mode(byte cfg) => (cfg >> ModeShift) & 3;

    /// <summary>pmpcfg0/2 pack 8 entries each on RV64; odd numbers do not exist, 4..14 read zero.</summary>
    public static bool TryReadCfg(CpuState* s, int index, out ulong value)
    {
        value = 0;
        if ((index & 1) != 0) return false;
        for (int i = 0; i < 8; i++)
        {
            int e = index * 4 + i;
            if (e < Entries) value |= (ulong)s->PmpCfg[e] << (8 * i);
        }
        return true;
    }

    /// <summary>Returns true when a rule changed (translations must then be recomputed).</summary>
    public static bool WriteCfg(CpuState* s, int index, ulong value)
    {
        if ((index & 1) != 0) return false;
        bool changed = false;
        for (int i = 0; i < 8; i++)
        {
            int e = index * 4 + i;
            if (e >= Entries || (s->PmpCfg[e] & Lock) != 0) continue;
            byte b = (byte)(value >> (8 * i));
            changed |= s->PmpCfg[e] != b;
            s->PmpCfg[e] = b;
        }
        return changed;
    }

    public static ulong ReadAddr(CpuState* s, int index) => index < Entries ? s->PmpAddr[index] : 0;

    public static bool WriteAddr(CpuState* s, int index, ulong value)
    {
        if (index >= Entries || (s->PmpCfg[index] & Lock) != 0) return false;
        // A locked TOR entry above also locks the address it starts from.
        if (index + 1 < Entries && (s->PmpCfg[index + 1] & Lock) != 0 && Mode(s->PmpCfg[index + 1]) == Tor) return false;
        bool changed = s->PmpAddr[index] != value;
        s->PmpAddr[index] = value;
        return changed;
    }

    public static bool AnyActive(CpuState* s)
    {
        for (int i = 0; i < Entries; i++) if (Mode(s->PmpCfg[i]) != Off) return true;
        return false;
    }

    public static bool AnyLocked(CpuState* s)
    {
        for (int i = 0; i < Entries; i++) if ((s->PmpCfg[i] & Lock) != 0 && Mode(s->PmpCfg[i]) != Off) return true;
        return false;
    }

    /// <summary>The range [start, end] entry <paramref name="i"/> matches; false when it matches nothing.</summary>
    private static bool Range(CpuState* s, int i, out ulong start, out ulong end)
    {
        ulong a = s->PmpAddr[i];
        start = end = 0;
        switch (Mode(s->PmpCfg[i]))
        {
            case Tor:
                start = i == 0 ? 0 : s->PmpAddr[i - 1] << 2;
                if ((a << 2) == 0 || (a << 2) <= start) return false;
                end = (a << 2) - 1;
                return true;
            case Na4:
                start = a << 2;
                end = start + 3;
                return true;
            case Napot:
                if (a == ulong.MaxValue) { start = 0; end = ulong.MaxValue; return true; }
                int ones = System.Numerics.BitOperations.TrailingZeroCount(~a);
                start = (a & ~((1UL << ones) - 1)) << 2;
                end = start + ((1UL << (ones + 3)) - 1);
                return true;
            default:
                return false;
        }
    }

    /// <summary>
    /// Permissions (R|W|X) for [address, address + length - 1] at privilege <paramref name="priv"/>,
    /// plus <see cref="WholePage"/> when asking for a page and the answer holds for all of it.
    /// An access that one entry only partly covers gets nothing, as in QEMU.
    /// </summary>
    public static int Check(CpuState* s, uint priv, ulong address, ulong length)
    {
        ulong last = address + length - 1;
        for (int i = 0; i < Entries; i++)
        {
            if (!Range(s, i, out ulong start, out ulong end)) continue;
            bool first = address >= start && address <= end, lastIn = last >= start && last <= end;
            if (!first && !lastIn && !(address < start && last > end)) continue; // disjoint
            if (!first || !lastIn) return 0; // straddles the entry's edge
            byte cfg = s->PmpCfg[i];
            int perms = priv == Priv.M && (cfg & Lock) == 0 ? AllPermissions : cfg & AllPermissions;
            return perms | WholePage;
        }
        return priv == Priv.M ? AllPermissions | WholePage : WholePage;
    }
}
