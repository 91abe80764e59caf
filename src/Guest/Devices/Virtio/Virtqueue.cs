using System.Buffers.Binary;
using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Devices.Virtio;

/// <summary>One segment of a descriptor chain: guest-physical address, length, and whether the device writes it.</summary>
public readonly record struct VirtqSegment(ulong Address, uint Length, bool DeviceWritable);

/// <summary>Why a queue stopped: the guest handed it something malformed (the device then needs a reset).</summary>
public enum VirtqError
{
    None = 0,
    OutsideRam = 1,
    ChainTooLong = 2,
    BadIndirect = 3,
    ReadableAfterWritable = 4,
    BadIndex = 5,
}

/// <summary>
/// A split virtqueue (virtio 1.1 §2.6) in guest memory, with no device logic:
/// <code>
/// descriptor table  size × { addr u64, len u32, flags u16 (NEXT 1, WRITE 2, INDIRECT 4), next u16 }
/// available ring    flags u16 (NO_INTERRUPT 1), idx u16, ring[size] u16
/// used ring         flags u16, idx u16, ring[size] { id u32, len u32 }
/// </code>
/// <see cref="TryPop"/> walks the next available chain (following one level of indirect table),
/// bounds-checking everything against RAM; <see cref="PushUsed"/> returns it. The segments of the
/// last popped chain live in a buffer the queue reuses, so serving a request allocates nothing.
/// </summary>
public sealed class Virtqueue
{
    private const ushort DescNext = 1, DescWrite = 2, DescIndirect = 4;
    private const ushort AvailNoInterrupt = 1;
    private const int DescSize = 16;

    private readonly GuestDma _dma;
    private VirtqSegment[] _segments;

    public Virtqueue(GuestDma dma, ushort maxSize)
    {
        _dma = dma;
        MaxSize = maxSize;
        _segments = new VirtqSegment[maxSize];
    }

    public ushort MaxSize { get; }
    public ushort Size { get; set; }
    public bool Ready { get; set; }
    public ulong DescTable { get; set; }
    public ulong AvailRing { get; set; }
    public ulong UsedRing { get; set; }
    /// <summary>Next available-ring entry the device will take.</summary>
    public ushort LastAvail { get; private set; }
    /// <summary>The used ring's idx as the device last wrote it.</summary>
    public ushort UsedIdx { get; private set; }
    public VirtqError Error { get; private set; }

    public void Reset()
    {
        Size = 0;
        Ready = false;
        DescTable = AvailRing = UsedRing = 0;
        LastAvail = UsedIdx = 0;
        Error = VirtqError.None;
    }

    /// <summary>Takes the next available chain. False when none is available or the queue is broken (see <see cref="Error"/>).</summary>
    public bool TryPop(out ushort head, out ReadOnlySpan<VirtqSegment> chain)
    {
        head = 0;
        chain = default;
        if (!Ready || Size == 0 || Error != VirtqError.None) return false;
        if (!_dma.ReadU16(AvailRing + 2, out ushort availIdx)) return Fail(VirtqError.OutsideRam);
        if (availIdx == LastAvail) return false;
        if ((ushort)(availIdx - LastAvail) > Size) return Fail(VirtqError.BadIndex);
        if (!_dma.ReadU16(AvailRing + 4 + 2UL * (ulong)(LastAvail % Size), out head)) return Fail(VirtqError.OutsideRam);
        if (head >= Size) return Fail(VirtqError.BadIndex);
        LastAvail++;
        int count = Walk(head);
        if (count < 0) return false;
        chain = _segments.AsSpan(0, count);
        return true;
    }

    private int Walk(ushort head)
    {
        Span<byte> d = stackalloc byte[DescSize];
        ulong table = DescTable;
        uint tableSize = Size;
        uint index = head;
        int count = 0, steps = 0;
        bool inIndirect = false, sawWritable = false;
        while (true)
        {
            if (index >= tableSize) { Fail(VirtqError.BadIndex); return -1; }
            if (!_dma.Read(table + (ulong)index * DescSize, d)) { Fail(VirtqError.OutsideRam); return -1; }
            ulong addr = BinaryPrimitives.ReadUInt64LittleEndian(d);
            uint len = BinaryPrimitives.ReadUInt32LittleEndian(d[8..]);
            ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(d[12..]);
            ushort next = BinaryPrimitives.ReadUInt16LittleEndian(d[14..]);
            if (++steps > Size + tableSize) { Fail(VirtqError.ChainTooLong); return -1; } // a loop
            if ((flags & DescIndirect) != 0)
            {
                // §2.6.5.3: one level only, a whole table, never combined with NEXT.
                if (inIndirect || (flags & DescNext) != 0 || len == 0 || len % DescSize != 0 || len / DescSize > 0xFFFF)
                { Fail(VirtqError.BadIndirect); return -1; }
                table = addr;
                tableSize = len / DescSize;
                index = 0;
                inIndirect = true;
                continue;
            }
            bool writable = (flags & DescWrite) != 0;
            if (!writable && sawWritable) { Fail(VirtqError.ReadableAfterWritable); return -1; }
            sawWritable |= writable;
            if (!_dma.Memory.Contains(addr, (int)Math.Min(len, int.MaxValue)) || len > int.MaxValue) { Fail(VirtqError.OutsideRam); return -1; }
            if (count == _segments.Length) Array.Resize(ref _segments, _segments.Length * 2);
            _segments[count++] = new VirtqSegment(addr, len, writable);
            if ((flags & DescNext) == 0) return count;
            index = next;
        }
    }

    /// <summary>Returns chain <paramref name="head"/> with <paramref name="written"/> bytes written into it.</summary>
    public bool PushUsed(ushort head, uint written)
    {
        if (Error != VirtqError.None) return false;
        ulong slot = UsedRing + 4 + 8UL * (ulong)(UsedIdx % Size);
        if (!_dma.WriteU32(slot, head) || !_dma.WriteU32(slot + 4, written)) return Fail(VirtqError.OutsideRam);
        UsedIdx++;
        // The element is in place before the index that publishes it (one thread: program order suffices).
        if (!_dma.WriteU16(UsedRing + 2, UsedIdx)) return Fail(VirtqError.OutsideRam);
        return true;
    }

    /// <summary>False when the driver asked not to be interrupted (VIRTQ_AVAIL_F_NO_INTERRUPT).</summary>
    public bool DriverWantsInterrupt()
        => !_dma.ReadU16(AvailRing, out ushort flags) || (flags & AvailNoInterrupt) == 0;

    /// <summary>Copies the chain's device-readable bytes, from <paramref name="skip"/> on, into <paramref name="destination"/>; returns bytes copied.</summary>
    public int ReadChain(ReadOnlySpan<VirtqSegment> chain, long skip, Span<byte> destination)
    {
        int copied = 0;
        foreach (var s in chain)
        {
            if (s.DeviceWritable || copied == destination.Length) break;
            if (skip >= s.Length) { skip -= s.Length; continue; }
            int n = (int)Math.Min(s.Length - skip, destination.Length - copied);
            if (!_dma.Read(s.Address + (ulong)skip, destination.Slice(copied, n))) { Fail(VirtqError.OutsideRam); break; }
            copied += n;
            skip = 0;
        }
        return copied;
    }

    /// <summary>Copies <paramref name="data"/> into the chain's device-writable segments from <paramref name="skip"/> on; returns bytes written.</summary>
    public int WriteChain(ReadOnlySpan<VirtqSegment> chain, long skip, ReadOnlySpan<byte> data)
    {
        int written = 0;
        foreach (var s in chain)
        {
            if (!s.DeviceWritable) continue;
            if (written == data.Length) break;
            if (skip >= s.Length) { skip -= s.Length; continue; }
            int n = (int)Math.Min(s.Length - skip, data.Length - written);
            if (!_dma.Write(s.Address + (ulong)skip, data.Slice(written, n))) { Fail(VirtqError.OutsideRam); break; }
            written += n;
            skip = 0;
        }
        return written;
    }

    private bool Fail(VirtqError error)
    {
        Error = error;
        return false;
    }

    // ---- State (inside the transport's section) ----

    internal void Save(StateWriter w)
    {
        w.U16(Size);
        w.Bool(Ready);
        w.U64(DescTable);
        w.U64(AvailRing);
        w.U64(UsedRing);
        w.U16(LastAvail);
        w.U16(UsedIdx);
        w.U8((byte)Error);
    }

    internal readonly record struct Saved(ushort Size, bool Ready, ulong Desc, ulong Avail, ulong Used, ushort LastAvail, ushort UsedIdx, VirtqError Error);

    internal Saved Read(StateReader r)
    {
        var s = new Saved(r.U16(), r.Bool(), r.U64(), r.U64(), r.U64(), r.U16(), r.U16(), (VirtqError)r.U8());
        if (s.Size > MaxSize || (s.Size & (s.Size - 1)) != 0) throw new InvalidDataException($"virtqueue state has size {s.Size}; the queue allows powers of two up to {MaxSize}");
        if (!Enum.IsDefined(s.Error)) throw new InvalidDataException($"virtqueue state has an unknown error {(byte)s.Error}");
        return s;
    }

    internal void Apply(Saved s)
    {
        Size = s.Size;
        Ready = s.Ready;
        DescTable = s.Desc;
        AvailRing = s.Avail;
        UsedRing = s.Used;
        LastAvail = s.LastAvail;
        UsedIdx = s.UsedIdx;
        Error = s.Error;
    }
}
