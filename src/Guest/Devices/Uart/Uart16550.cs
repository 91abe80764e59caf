using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Devices.Uart;

/// <summary>
/// NS16550A UART as QEMU virt has it: transmit is instantaneous (THR is always empty), receive goes
/// through a 16-byte FIFO (1 byte with the FIFO off). Bytes arrive only through
/// <see cref="Receive"/>, which the host port calls between instructions.
/// </summary>
public sealed class Uart16550(Machine machine) : IMmioDevice
{
    public const ulong DefaultBase = 0x1000_0000;
    public const int Irq = 10;
    public const int FifoSize = 16;
    private const ushort StateVersion = 1;

    private const byte LsrDataReady = 0x01, LsrThrEmpty = 0x20, LsrTxEmpty = 0x40;
    private const byte IerRx = 0x01, IerThre = 0x02;
    private const byte LcrDlab = 0x80;

    private readonly byte[] _rx = new byte[FifoSize];
    private int _rxHead, _rxCount;
    private byte _ier, _lcr, _mcr, _scr, _fcr, _dll = 0x0C, _dlm;
    private bool _thrInterrupt;

    public ulong Base => DefaultBase;
    public ulong Length => 0x100;

    /// <summary>Free room in the receive FIFO: the host port never delivers more than this.</summary>
    public int RxSpace => ((_fcr & 1) != 0 ? FifoSize : 1) - _rxCount;

    public void Reset()
    {
        _rxHead = _rxCount = 0;
        _ier = _lcr = _mcr = _scr = _fcr = _dlm = 0;
        _dll = 0x0C;
        _thrInterrupt = false;
        UpdateIrq();
    }

    /// <summary>Delivers received bytes; returns how many fit.</summary>
    public int Receive(ReadOnlySpan<byte> data)
    {
        int n = Math.Min(data.Length, RxSpace);
        for (int i = 0; i < n; i++) _rx[(_rxHead + _rxCount++) % FifoSize] = data[i];
        if (n > 0) UpdateIrq();
        return n;
    }

    private void UpdateIrq()
    {
        bool high = ((_ier & IerRx) != 0 && _rxCount > 0) || ((_ier & IerThre) != 0 && _thrInterrupt);
        machine.Plic.SetLevel(Irq, high);
    }

    public bool Read(ulong offset, int size, out ulong value)
    {
        value = 0;
        if (size != 1) return offset < Length; // wider accesses read zero, as QEMU's byte-wide device does
        bool dlab = (_lcr & LcrDlab) != 0;
        switch (offset)
        {
            case 0:
                if (dlab) { value = _dll; break; }
                if (_rxCount > 0)
                {
                    value = _rx[_rxHead];
                    _rxHead = (_rxHead + 1) % FifoSize;
                    _rxCount--;
                    UpdateIrq();
                }
                break;
            case 1: value = dlab ? _dlm : _ier; break;
            case 2:
                {
                    byte iir = 0x01;
                    if ((_ier & IerRx) != 0 && _rxCount > 0) iir = 0x04;
                    else if ((_ier & IerThre) != 0 && _thrInterrupt)
                    {
                        iir = 0x02;
                        _thrInterrupt = false; // reading IIR acknowledges THRE
                        UpdateIrq();
                    }
                    if ((_fcr & 1) != 0) iir |= 0xC0;
                    value = iir;
                    break;
                }
            case 3: value = _lcr; break;
            case 4: value = _mcr; break;
            case 5: value = (byte)(LsrThrEmpty | LsrTxEmpty | (_rxCount > 0 ? LsrDataReady : 0)); break;
            case 6: value = 0xB0; break; // DCD, DSR, CTS asserted, as QEMU reports with no modem
            case 7: value = _scr; break;
        }
        return true;
    }

    public bool Write(ulong offset, int size, ulong value)
    {
        if (size != 1) return true;
        byte v = (byte)value;
        bool dlab = (_lcr & LcrDlab) != 0;
        switch (offset)
        {
            case 0:
                if (dlab) { _dll = v; break; }
                machine.HostPort.SerialOutput(v);
                _thrInterrupt = true; // transmit completes at once
                UpdateIrq();
                break;
            case 1:
                if (dlab) { _dlm = v; break; }
                bool threNewlyOn = (v & IerThre) != 0 && (_ier & IerThre) == 0;
                _ier = (byte)(v & 0x0F);
                if (threNewlyOn) _thrInterrupt = true;
                UpdateIrq();
                break;
            case 2:
                if ((v & 0x02) != 0) { _rxHead = _rxCount = 0; } // clear RX FIFO
                _fcr = (byte)(v & 0xC9);
                UpdateIrq();
                break;
            case 3: _lcr = v; break;
            case 4: _mcr = (byte)(v & 0x1F); break;
            case 7: _scr = v; break;
        }
        return true;
    }

    /// <summary>The version <see cref="Save"/> writes: a test stands in for a later build with it.</summary>
    internal ushort SaveVersion = StateVersion;

    public void Save(StateWriter w) => w.Section("UART", SaveVersion, WriteFields);

    public void WriteDigestState(StateWriter w) => w.Tagged("UART", WriteFields);

    // Save section v1 and the digest encoding share these fields today; a new save version may not.
    private void WriteFields(StateWriter w)
    {
        w.U8((byte)_rxCount);
        for (int i = 0; i < _rxCount; i++) w.U8(_rx[(_rxHead + i) % FifoSize]);
        w.U8(_ier); w.U8(_lcr); w.U8(_mcr); w.U8(_scr); w.U8(_fcr); w.U8(_dll); w.U8(_dlm);
        w.Bool(_thrInterrupt);
    }

    public Action PrepareRestore(StateReader r)
    {
        r.OpenSection("UART", 1, StateVersion);
        int count = r.U8();
        if (count > FifoSize) throw new InvalidDataException("UART state holds more bytes than its FIFO");
        byte[] rx = r.Bytes(count).ToArray();
        byte ier = r.U8(), lcr = r.U8(), mcr = r.U8(), scr = r.U8(), fcr = r.U8(), dll = r.U8(), dlm = r.U8();
        bool thr = r.Bool();
        r.CloseSection();
        // Bits the register writes mask off can only come from a corrupt or forged state.
        if ((ier & ~0x0F) != 0 || (mcr & ~0x1F) != 0 || (fcr & ~0xC9) != 0)
            throw new InvalidDataException("UART state has register bits the device never sets");
        return () =>
        {
            _rxHead = 0;
            _rxCount = count;
            rx.CopyTo(_rx, 0);
            (_ier, _lcr, _mcr, _scr, _fcr, _dll, _dlm) = (ier, lcr, mcr, scr, fcr, dll, dlm);
            _thrInterrupt = thr;
            UpdateIrq();
        };
    }

    public void Restore(StateReader r) => PrepareRestore(r)();
}
