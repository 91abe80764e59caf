using System.Buffers.Binary;
using LiveMigration.Guest.Memory;
using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Devices.Virtio.Balloon;

/// <summary>
/// virtio-balloon (virtio 1.1 §5.5) with free page reporting (VIRTIO_BALLOON_F_REPORTING), which
/// Linux 6.1 drives on its own: every few seconds it reports runs of free pages (2-4 MiB blocks) on
/// the reporting queue. Reported pages are zeroed and marked free in guest memory
/// (<see cref="GuestMemory.ReportFree"/>): no migration strategy sends them, as with the bare-metal
/// balloon, until the guest writes them again. Queues, in the order the driver finds them with
/// these features: 0 inflate, 1 deflate, 2 reporting. Inflated pages go to the machine's
/// <see cref="Devices.Balloon.BalloonDevice"/> (free until deflated). Configuration space:
/// <code>
/// 0x00 num_pages   u32 RO  pages the host wants in the balloon (<see cref="SetTarget"/>)
/// 0x04 actual      u32 RW  pages the driver has in it
/// </code>
/// </summary>
public sealed class VirtioBalloon(Machine machine) : IVirtioDevice
{
    public const ulong FeatureReporting = 1UL << 5;
    public const int InflateQueue = 0, DeflateQueue = 1, ReportingQueue = 2;
    /// <summary>The balloon protocol's page size (always 4 KiB, whatever the guest's).</summary>
    private const int PfnShift = 12;
    // Bump when a saved field is added or its meaning changes; readers accept 1..current.
    private const ushort StateVersion = 1;

    private readonly GuestMemory _memory = machine.Memory;
    private VirtioMmio? _transport;
    private uint _target, _actual;

    public VirtioDeviceId DeviceId => VirtioDeviceId.Balloon;
    public ulong Features => FeatureReporting;
    public int QueueCount => 3;
    public ushort QueueMaxSize => 128;

    /// <summary>Pages the driver says are in the balloon.</summary>
    public uint ActualPages => _actual;

    /// <summary>Free page reports received, and the pages they covered (for reports and tests).</summary>
    public long Reports { get; private set; }
    public long ReportedPages { get; private set; }

    public void Attach(VirtioMmio transport) => _transport = transport;

    /// <summary>Asks the driver to hold <paramref name="pages"/> pages in the balloon (a config change interrupt).</summary>
    public void SetTarget(uint pages)
    {
        _target = pages;
        _transport!.ConfigChanged();
    }

    public uint ReadConfig(int offset, int size)
    {
        uint word = (offset & ~3) switch { 0x00 => _target, 0x04 => _actual, _ => 0 };
        int shift = (offset & 3) * 8;
        return size switch { 1 => (word >> shift) & 0xFF, 2 => (word >> shift) & 0xFFFF, _ => word };
    }

    public void WriteConfig(int offset, int size, uint value)
    {
        if (offset == 0x04 && size == 4) _actual = value;
    }

    public void QueueNotify(int queue)
    {
        var q = _transport!.Queue(queue);
        bool any = false;
        while (q.TryPop(out ushort head, out var chain))
        {
            if (queue == ReportingQueue) Report(chain);
            else Pfns(q, chain, inflate: queue == InflateQueue);
            if (q.Error != VirtqError.None || !q.PushUsed(head, 0)) break;
            any = true;
        }
        if (any) _transport.UsedBuffersAdded(queue);
    }

    /// <summary>Inflate/deflate: the buffer is an array of 32-bit page frame numbers.</summary>
    private void Pfns(Virtqueue q, ReadOnlySpan<VirtqSegment> chain, bool inflate)
    {
        Span<byte> pfn = stackalloc byte[4];
        for (long at = 0; q.ReadChain(chain, at, pfn) == 4; at += 4)
        {
            ulong address = (ulong)BinaryPrimitives.ReadUInt32LittleEndian(pfn) << PfnShift;
            if (!_memory.Contains(address, GuestMemory.PageSize)) continue; // not RAM: nothing to give back
            int page = (int)((address - _memory.Base) >> GuestMemory.PageShift);
            if (inflate) machine.Balloon.ReportFree(page, 1);
            else machine.Balloon.Withdraw(page, 1);
        }
    }

    /// <summary>Free page reporting: each (device-writable) segment is a run of free pages; the device writes nothing.</summary>
    private void Report(ReadOnlySpan<VirtqSegment> chain)
    {
        foreach (var s in chain)
        {
            // Only whole pages inside RAM; a partial page at either end stays the guest's.
            ulong start = (s.Address + GuestMemory.PageSize - 1) & ~(ulong)(GuestMemory.PageSize - 1);
            ulong end = (s.Address + s.Length) & ~(ulong)(GuestMemory.PageSize - 1);
            if (end <= start || !_memory.Contains(start, (int)Math.Min(end - start, int.MaxValue))) continue;
            int first = (int)((start - _memory.Base) >> GuestMemory.PageShift);
            int count = (int)((end - start) >> GuestMemory.PageShift);
            _memory.ReportFree(first, count);
            ReportedPages += count;
        }
        Reports++;
    }

    public void Reset()
    {
        _actual = 0; // the target is the host's wish and survives a driver reset
    }

    public void Save(StateWriter w)
    {
        w.BeginSection("VBLN", StateVersion);
        WriteFields(w);
        w.EndSection();
    }

    public void WriteDigestState(StateWriter w)
    {
        w.Bytes("VBLN"u8);
        WriteFields(w);
    }

    private void WriteFields(StateWriter w)
    {
        w.U32(_target);
        w.U32(_actual);
        w.U64((ulong)Reports);
        w.U64((ulong)ReportedPages);
        var runs = _memory.ReportedRuns();
        w.U32((uint)_memory.PageCount);
        w.U32((uint)runs.Count);
        foreach (var (first, count) in runs)
        {
            w.U32((uint)first);
            w.U32((uint)count);
        }
    }

    public Action Restore(StateReader r)
    {
        r.OpenSection("VBLN", 1, StateVersion);
        uint target = r.U32(), actual = r.U32();
        ulong reports = r.U64(), reportedPages = r.U64();
        uint pages = r.U32();
        if (pages != (uint)_memory.PageCount)
            throw new InvalidDataException($"virtio-balloon state covers {pages} pages; this machine has {_memory.PageCount}");
        uint runCount = r.U32();
        if (runCount > pages) throw new InvalidDataException($"virtio-balloon state has {runCount} reported runs, more than there are pages");
        var runs = new (int First, int Count)[runCount];
        long previousEnd = -1;
        for (int i = 0; i < runs.Length; i++)
        {
            uint first = r.U32(), n = r.U32();
            if (n == 0 || first >= pages || n > pages - first || first <= previousEnd)
                throw new InvalidDataException($"virtio-balloon state has a bad reported run {first}..+{n}");
            runs[i] = ((int)first, (int)n);
            previousEnd = first + n;
        }
        r.CloseSection();
        if (reports > long.MaxValue || reportedPages > long.MaxValue) throw new InvalidDataException("virtio-balloon state has bad counters");
        return () =>
        {
            _target = target;
            _actual = actual;
            Reports = (long)reports;
            ReportedPages = (long)reportedPages;
            _memory.SetReportedRuns(runs);
        };
    }
}
