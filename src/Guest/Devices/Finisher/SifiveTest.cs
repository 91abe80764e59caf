using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Devices.Finisher;

/// <summary>The sifive_test finisher: 0x5555 passes, (code &lt;&lt; 16) | 0x3333 fails with code.</summary>
public sealed class SifiveTest(Machine machine) : IMmioDevice
{
    public const ulong DefaultBase = 0x0010_0000;
    public const uint Pass = 0x5555;
    public const uint Fail = 0x3333;
    public const uint ResetValue = 0x7777;
    private const ushort StateVersion = 1;

    public ulong Base => DefaultBase;
    public ulong Length => 0x1000;

    public void Reset() { }

    public bool Read(ulong offset, int size, out ulong value)
    {
        value = 0;
        return true;
    }

    public bool Write(ulong offset, int size, ulong value)
    {
        if (offset != 0) return true;
        uint v = (uint)value;
        switch (v & 0xFFFF)
        {
            case Pass: machine.Finish(0); break;
            case Fail: machine.Finish((int)(v >> 16)); break;
            case ResetValue: machine.Finish(0); break; // no reboot: a reset ends the run as a pass
        }
        return true;
    }

    public void WriteDigestState(StateWriter w) => w.Bytes("FINI"u8);

    public void Save(StateWriter w)
    {
        w.BeginSection("FINI", StateVersion);
        w.EndSection();
    }

    public Action PrepareRestore(StateReader r)
    {
        r.OpenSection("FINI", 1, StateVersion);
        r.CloseSection();
        return static () => { };
    }

    public void Restore(StateReader r) => PrepareRestore(r)();
}
