using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Devices.Virtio.Rng;

/// <summary>
/// virtio-rng (virtio 1.1 §5.4): one queue of device-writable buffers, each filled with entropy
/// from the host port (an input, logged and replayed like the <c>seed</c> CSR) when the driver
/// notifies. No features, no configuration space, no state beyond the transport's.
/// </summary>
public sealed class VirtioRng(Machine machine) : IVirtioDevice
{
    /// <summary>Bytes served per buffer at most: a request is small (the kernel asks 64 at a time), a hostile one stays cheap.</summary>
    public const int MaxBytesPerRequest = 4096;
    private const ushort StateVersion = 1;

    private readonly byte[] _buffer = new byte[MaxBytesPerRequest];
    private VirtioMmio? _transport;

    public VirtioDeviceId DeviceId => VirtioDeviceId.Rng;
    public ulong Features => 0;
    public int QueueCount => 1;
    public ushort QueueMaxSize => 64;

    /// <summary>Entropy bytes handed to the guest (for reports and tests).</summary>
    public long BytesServed { get; private set; }

    public void Attach(VirtioMmio transport) => _transport = transport;

    public uint ReadConfig(int offset, int size) => 0;
    public void WriteConfig(int offset, int size, uint value) { }

    public void QueueNotify(int queue)
    {
        var q = _transport!.Queue(0);
        bool any = false;
        while (q.TryPop(out ushort head, out var chain))
        {
            long room = 0;
            foreach (var s in chain) if (s.DeviceWritable) room += s.Length;
            int n = (int)Math.Min(room, MaxBytesPerRequest);
            var bytes = _buffer.AsSpan(0, n);
            machine.HostPort.ReadEntropy(machine, bytes);
            int written = q.WriteChain(chain, 0, bytes);
            if (!q.PushUsed(head, (uint)written)) break;
            BytesServed += written;
            any = true;
        }
        if (any) _transport.UsedBuffersAdded(0);
    }

    public void Reset() { }

    public void Save(StateWriter w)
    {
        w.BeginSection("VRNG", StateVersion);
        w.U64((ulong)BytesServed);
        w.EndSection();
    }

    public void WriteDigestState(StateWriter w)
    {
        w.Bytes("VRNG"u8);
        w.U64((ulong)BytesServed);
    }

    public Action Restore(StateReader r)
    {
        r.OpenSection("VRNG", 1, StateVersion);
        ulong served = r.U64();
        r.CloseSection();
        if (served > long.MaxValue) throw new InvalidDataException("virtio-rng state has a bad byte count");
        return () => BytesServed = (long)served;
    }
}
