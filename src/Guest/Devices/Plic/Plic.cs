using System.Numerics;
using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Devices.Plic;

/// <summary>
/// Platform-level interrupt controller, QEMU virt layout: priorities at 4*source, pending bits at
/// 0x1000, per-context enables at 0x2000 + 0x80*ctx, threshold/claim at 0x200000 + 0x1000*ctx.
/// Context 0 is hart 0 M-mode (drives MEIP); context 1 (S-mode on QEMU) is kept for compatibility.
/// Sources are level-triggered.
/// </summary>
public sealed class Plic(Machine machine) : IMmioDevice
{
    public const ulong DefaultBase = 0x0C00_0000;
    public const int Sources = 96; // QEMU virt's VIRT_IRQCHIP_NUM_SOURCES
    public const int Contexts = 2;
    private const int Words = Sources / 32;
    private const ushort StateVersion = 1;

    private readonly uint[] _priority = new uint[Sources];
    private readonly uint[] _pending = new uint[Words];
    private readonly uint[] _claimed = new uint[Words];
    private readonly uint[] _level = new uint[Words];
    private readonly uint[] _enable = new uint[Contexts * Words];
    private readonly uint[] _threshold = new uint[Contexts];

    public ulong Base => DefaultBase;
    public ulong Length => 0x0400_0000;

    public void Reset()
    {
        Array.Clear(_priority);
        Array.Clear(_pending);
        Array.Clear(_claimed);
        Array.Clear(_level);
        Array.Clear(_enable);
        Array.Clear(_threshold);
    }

    /// <summary>A device drives its interrupt line.</summary>
    public void SetLevel(int source, bool high)
    {
        uint bit = 1u << (source & 31);
        int w = source >> 5;
        if (high) _level[w] |= bit; else _level[w] &= ~bit;
        if (high && (_claimed[w] & bit) == 0) _pending[w] |= bit;
        if (!high) _pending[w] &= ~bit;
        machine.InterruptStateChanged();
    }

    /// <summary>True when context 0 has a pending, enabled source above its threshold.</summary>
    public bool MachineExternalPending => BestPending(0) != 0;

    /// <summary>True when context 1 (hart 0 S-mode) has a pending, enabled source above its threshold: drives SEIP.</summary>
    public bool SupervisorExternalPending => BestPending(1) != 0;

    private int BestPending(int context)
    {
        int best = 0;
        uint bestPriority = _threshold[context];
        for (int w = 0; w < Words; w++)
        {
            uint candidates = _pending[w] & _enable[context * Words + w];
            while (candidates != 0)
            {
                int s = w * 32 + BitOperations.TrailingZeroCount(candidates);
                candidates &= candidates - 1;
                if (_priority[s] > bestPriority) { best = s; bestPriority = _priority[s]; }
            }
        }
        return best;
    }

    public bool Read(ulong offset, int size, out ulong value)
    {
        value = 0;
        if (size != 4) return false;
        if (offset < 4 * Sources) value = _priority[offset / 4];
        else if (offset is >= 0x1000 and < 0x1000 + Words * 4) value = _pending[(offset - 0x1000) / 4];
        else if (offset >= 0x2000 && offset < 0x2000 + 0x80 * Contexts)
        {
            ulong ctx = (offset - 0x2000) / 0x80, word = (offset - 0x2000) % 0x80 / 4;
            if (word < Words) value = _enable[ctx * Words + word];
        }
        else if (offset >= 0x20_0000 && offset < 0x20_0000 + 0x1000 * Contexts)
        {
            int ctx = (int)((offset - 0x20_0000) / 0x1000);
            switch ((offset - 0x20_0000) % 0x1000)
            {
                case 0: value = _threshold[ctx]; break;
                case 4: value = (uint)Claim(ctx); break;
            }
        }
        return true;
    }

    private int Claim(int context)
    {
        int s = BestPending(context);
        if (s == 0) return 0;
        uint bit = 1u << (s & 31);
        _pending[s >> 5] &= ~bit;
        _claimed[s >> 5] |= bit;
        machine.InterruptStateChanged();
        return s;
    }

    private void Complete(int source)
    {
        if (source <= 0 || source >= Sources) return;
        uint bit = 1u << (source & 31);
        int w = source >> 5;
        _claimed[w] &= ~bit;
        if ((_level[w] & bit) != 0) _pending[w] |= bit; // a level source still asserted fires again
        machine.InterruptStateChanged();
    }

    public bool Write(ulong offset, int size, ulong value)
    {
        if (size != 4) return false;
        uint v = (uint)value;
        if (offset < 4 * Sources) { if (offset != 0) _priority[offset / 4] = v & 7; }
        else if (offset >= 0x2000 && offset < 0x2000 + 0x80 * Contexts)
        {
            ulong ctx = (offset - 0x2000) / 0x80, word = (offset - 0x2000) % 0x80 / 4;
            if (word < Words) _enable[ctx * Words + word] = word == 0 ? v & ~1u : v; // source 0 does not exist
        }
        else if (offset >= 0x20_0000 && offset < 0x20_0000 + 0x1000 * Contexts)
        {
            int ctx = (int)((offset - 0x20_0000) / 0x1000);
            switch ((offset - 0x20_0000) % 0x1000)
            {
                case 0: _threshold[ctx] = v & 7; break;
                case 4: Complete((int)v); break;
            }
        }
        machine.InterruptStateChanged();
        return true;
    }

    public void Save(StateWriter w) => w.Section("PLIC", StateVersion, WriteFields);

    public void WriteDigestState(StateWriter w) => w.Tagged("PLIC", WriteFields);

    private uint[][] Arrays => [_priority, _pending, _claimed, _level, _enable, _threshold];

    // Save section v1 and the digest encoding share these fields today; a new save version may not.
    private void WriteFields(StateWriter w)
    {
        foreach (var a in Arrays)
        {
            w.U32((uint)a.Length);
            foreach (uint x in a) w.U32(x);
        }
    }

    public Action PrepareRestore(StateReader r)
    {
        r.OpenSection("PLIC", 1, StateVersion);
        var targets = Arrays;
        var values = new uint[targets.Length][];
        for (int k = 0; k < targets.Length; k++)
        {
            if (r.U32() != targets[k].Length) throw new InvalidDataException("PLIC state has a different source or context count");
            values[k] = new uint[targets[k].Length];
            for (int i = 0; i < values[k].Length; i++) values[k][i] = r.U32();
        }
        r.CloseSection();
        // Only values a guest can write: priorities and thresholds are 3 bits, source 0 does not exist.
        if (values[0][0] != 0 || values[0].Any(p => p > 7) || values[5].Any(t => t > 7))
            throw new InvalidDataException("PLIC state has a priority or threshold outside 0..7");
        for (int ctx = 0; ctx < Contexts; ctx++)
            if ((values[4][ctx * Words] & 1) != 0) throw new InvalidDataException("PLIC state enables source 0");
        return () =>
        {
            for (int k = 0; k < targets.Length; k++) values[k].CopyTo(targets[k], 0);
        };
    }

    public void Restore(StateReader r) => PrepareRestore(r)();
}
