using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Devices.Clint;

/// <summary>
/// Core-local interruptor (SiFive CLINT layout as on QEMU virt): msip, mtimecmp, mtime at 10 MHz.
/// The CLINT never reads a clock: <see cref="Time"/> moves only when the host port delivers a time
/// (on a guest read of mtime, or when the port decides a deadline has passed).
/// </summary>
public sealed class Clint(Machine machine) : IMmioDevice
{
    public const ulong DefaultBase = 0x0200_0000;
    public const ulong Frequency = 10_000_000;
    private const ushort StateVersion = 1; // bump on any change to the saved fields

    public ulong Base => DefaultBase;
    public ulong Length => 0x10000;

    public uint Msip { get; private set; }
    public ulong Mtimecmp { get; private set; } = ulong.MaxValue;
    /// <summary>The last time the host port delivered.</summary>
    public ulong Time { get; private set; }

    public bool TimerPending => Time >= Mtimecmp;

    public void Reset()
    {
        Msip = 0;
        Mtimecmp = ulong.MaxValue;
        Time = 0;
    }

    internal void SetTime(ulong time) => Time = time;

    public bool Read(ulong offset, int size, out ulong value)
    {
        value = 0;
        switch (offset)
        {
            case 0x0: value = Msip; return size == 4;
            case 0x4000: value = size == 4 ? (uint)Mtimecmp : Mtimecmp; return size is 4 or 8;
            case 0x4004: value = Mtimecmp >> 32; return size == 4;
            case 0xBFF8: value = machine.ReadTime(); if (size == 4) value = (uint)value; return size is 4 or 8;
            case 0xBFFC: value = machine.ReadTime() >> 32; return size == 4;
            default: return offset < Length; // unimplemented registers read as zero, like QEMU's
        }
    }

    public bool Write(ulong offset, int size, ulong value)
    {
        switch (offset)
        {
            case 0x0: Msip = (uint)value & 1; break;
            case 0x4000:
                Mtimecmp = size == 8 ? value : (Mtimecmp & 0xFFFF_FFFF_0000_0000) | (uint)value;
                break;
            case 0x4004: Mtimecmp = (Mtimecmp & 0xFFFF_FFFF) | ((ulong)(uint)value << 32); break;
            // Writing mtime would need the host clock inside the machine; the guests never do it.
            default: break;
        }
        machine.InterruptStateChanged();
        return true;
    }

    public void Save(StateWriter w) => w.Section("CLNT", StateVersion, WriteFields);

    public void WriteDigestState(StateWriter w) => w.Tagged("CLNT", WriteFields);

    // Save section v1 and the digest encoding share these fields today; a new save version may not.
    private void WriteFields(StateWriter w)
    {
        w.U32(Msip);
        w.U64(Mtimecmp);
        w.U64(Time);
    }

    public Action PrepareRestore(StateReader r)
    {
        r.OpenSection("CLNT", 1, StateVersion);
        uint msip = r.U32();
        ulong mtimecmp = r.U64(), time = r.U64();
        r.CloseSection();
        if (msip > 1) throw new InvalidDataException($"CLINT state has msip {msip}; the register holds one bit");
        return () =>
        {
            Msip = msip;
            Mtimecmp = mtimecmp;
            Time = time;
        };
    }

    public void Restore(StateReader r) => PrepareRestore(r)();
}
