using System.Buffers.Binary;
using LiveMigration.Guest.State;

namespace LiveMigration.Guest.Devices.Virtio.Block;

/// <summary>
/// virtio-blk (virtio 1.1 §5.2) over a <see cref="Block.Disk"/>. A notify only takes the requests
/// off the queue; they complete when the host port says so (<see cref="IHostPort.BlockRequestsPending"/>,
/// <see cref="Machine.CompleteBlockRequests"/>): completion timing is an input, logged and replayed,
/// while the data a read returns is determined by the disk's state at that icount. Requests:
/// <code>
/// header (device-readable)  type u32, reserved u32, sector u64
/// data                      IN: device-writable; OUT: device-readable; DISCARD/WRITE_ZEROES: {sector u64, sectors u32, flags u32}*
/// status (device-writable)  u8: OK 0, IOERR 1, UNSUPP 2
/// </code>
/// Discard zeroes the range (deterministic, as write-zeroes). Configuration space (subset of §5.2.4):
/// capacity u64 @0, seg_max u32 @12, blk_size u32 @20, max_discard_sectors u32 @36,
/// max_discard_seg u32 @40, discard_sector_alignment u32 @44, max_write_zeroes_sectors u32 @48,
/// max_write_zeroes_seg u32 @52.
/// </summary>
public sealed class VirtioBlk(Machine machine) : IVirtioDevice
{
    public const ulong FeatureSegMax = 1UL << 2, FeatureRo = 1UL << 5, FeatureBlkSize = 1UL << 6, FeatureFlush = 1UL << 9,
        FeatureDiscard = 1UL << 13, FeatureWriteZeroes = 1UL << 14;
    public const uint TypeIn = 0, TypeOut = 1, TypeFlush = 4, TypeGetId = 8, TypeDiscard = 11, TypeWriteZeroes = 13;
    public const byte StatusOk = 0, StatusIoErr = 1, StatusUnsupported = 2;
    public const int IdBytes = 20;
    private const ushort Size = 128;
    private const uint MaxRangeSectors = 1 << 15; // 16 MiB per discard/write-zeroes range
    // Bump when a saved field is added or its meaning changes; readers accept 1..current.
    private const ushort StateVersion = 1;

    private readonly List<Request> _pending = [];
    private readonly byte[] _buffer = new byte[Disk.BlockSize];
    private VirtioMmio? _transport;
    private bool _announce;

    /// <summary>A request taken off the queue and not yet completed: its chain's head and segments.</summary>
    private readonly record struct Request(ushort Head, VirtqSegment[] Segments);

    /// <summary>The disk behind the device; null until the host inserts one (every request then fails).</summary>
    public Disk? Disk { get; private set; }

    /// <summary>The serial number GET_ID returns (at most 20 bytes; empty by default, as QEMU's).</summary>
    public byte[] Serial { get; set; } = [];

    public VirtioDeviceId DeviceId => VirtioDeviceId.Block;

    public ulong Features => FeatureSegMax | FeatureBlkSize | FeatureFlush | FeatureDiscard | FeatureWriteZeroes | (Disk is { ReadOnly: true } ? FeatureRo : 0);
    public int QueueCount => 1;
    public ushort QueueMaxSize => Size;

    public int InFlight => _pending.Count;
    public long Requests { get; private set; }

    /// <summary>Puts the disk in: before the guest runs, or when a restored state names it.</summary>
    public void Insert(Disk disk)
    {
        if (Disk != null) throw new InvalidOperationException("the machine already has a disk");
        Disk = disk;
    }

    public void Attach(VirtioMmio transport) => _transport = transport;

    public uint ReadConfig(int offset, int size)
    {
        Span<byte> config = stackalloc byte[60];
        BinaryPrimitives.WriteUInt64LittleEndian(config, (ulong)(Disk?.Sectors ?? 0));
        BinaryPrimitives.WriteUInt32LittleEndian(config[12..], Size - 2u);
        BinaryPrimitives.WriteUInt32LittleEndian(config[20..], Disk.SectorSize);
        BinaryPrimitives.WriteUInt32LittleEndian(config[36..], MaxRangeSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(config[40..], 1);
        BinaryPrimitives.WriteUInt32LittleEndian(config[44..], Disk.BlockSize / Disk.SectorSize);
        BinaryPrimitives.WriteUInt32LittleEndian(config[48..], MaxRangeSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(config[52..], 1);
        if (offset < 0 || offset + size > config.Length || size is not (1 or 2 or 4)) return 0;
        return size switch
        {
            1 => config[offset],
            2 => BinaryPrimitives.ReadUInt16LittleEndian(config[offset..]),
            _ => BinaryPrimitives.ReadUInt32LittleEndian(config[offset..]),
        };
    }

    public void WriteConfig(int offset, int size, uint value) { } // nothing the driver may change

    public void QueueNotify(int queue)
    {
        var q = _transport!.Queue(0);
        bool any = false;
        while (_pending.Count < q.Size && q.TryPop(out ushort head, out var chain))
        {
            _pending.Add(new Request(head, chain.ToArray()));
            any = true;
        }
        if (!any) return;
        _announce = true;
        machine.InterruptStateChanged(); // the port hears of them at the next instruction boundary
    }

    /// <summary>True once per batch of new requests: the machine then tells its port.</summary>
    internal bool TakeAnnouncement()
    {
        if (!_announce) return false;
        _announce = false;
        return true;
    }

    /// <summary>
    /// Post-copy: makes present every disk block the requests in flight read, or write in part
    /// (fetching the absent ones); false when one cannot come now, and then they stay in flight,
    /// announced again. A malformed request needs nothing: it fails as it would anyway.
    /// </summary>
    internal bool EnsureBlocksPresent()
    {
        if (Disk is not { HasAbsentBlocks: true } disk || _pending.Count == 0) return true;
        var q = _transport!.Queue(0);
        Span<byte> header = stackalloc byte[16];
        Span<byte> range = stackalloc byte[16];
        foreach (var r in _pending)
        {
            long readable = 0, writable = 0;
            foreach (var s in r.Segments)
                if (s.DeviceWritable) writable += s.Length; else readable += s.Length;
            if (writable == 0 || q.ReadChain(r.Segments, 0, header) != 16) continue;
            uint type = BinaryPrimitives.ReadUInt32LittleEndian(header);
            ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
            bool ok = true;
            if (type == TypeIn && InRange(sector, writable - 1)) ok = disk.EnsureReadable((long)sector * Disk.SectorSize, writable - 1);
            else if (type == TypeOut && InRange(sector, readable - 16)) ok = disk.EnsureWritable((long)sector * Disk.SectorSize, readable - 16);
            else if (type is TypeDiscard or TypeWriteZeroes && readable > 16 && (readable - 16) % 16 == 0)
                for (long at = 0; ok && at < readable - 16; at += 16)
                {
                    if (q.ReadChain(r.Segments, 16 + at, range) != 16) break;
                    ulong first = BinaryPrimitives.ReadUInt64LittleEndian(range);
                    uint sectors = BinaryPrimitives.ReadUInt32LittleEndian(range[8..]);
                    if (sectors <= MaxRangeSectors && InRange(first, (long)sectors * Disk.SectorSize))
                        ok = disk.EnsureWritable((long)first * Disk.SectorSize, (long)sectors * Disk.SectorSize);
                }
            if (!ok)
            {
                _announce = true; // the port hears of them again when the machine runs on
                return false;
            }
        }
        return true;
    }

    /// <summary>Completes the <paramref name="count"/> oldest requests in flight (reads see the disk now), then interrupts once.</summary>
    public void Complete(int count)
    {
        if (count < 0 || count > _pending.Count) throw new ArgumentOutOfRangeException(nameof(count), $"{count} block requests to complete; {_pending.Count} are in flight");
        if (count == 0) return;
        var q = _transport!.Queue(0);
        for (int i = 0; i < count; i++)
        {
            var r = _pending[i];
            uint written = Serve(q, r.Segments);
            if (!q.PushUsed(r.Head, written)) break;
            Requests++;
        }
        _pending.RemoveRange(0, count);
        if (q.Error != VirtqError.None) _transport.NeedsReset();
        else _transport.UsedBuffersAdded(0);
        // Buffers the driver added while these were in flight (beyond the queue's size) come next.
        if (q.Error == VirtqError.None) QueueNotify(0);
    }

    /// <summary>Executes one request; returns the bytes written into the chain (data in plus status).</summary>
    private uint Serve(Virtqueue q, VirtqSegment[] chain)
    {
        long readable = 0, writable = 0;
        foreach (var s in chain)
            if (s.DeviceWritable) writable += s.Length; else readable += s.Length;
        if (writable == 0) return 0; // no status byte: nothing to answer with
        Span<byte> header = stackalloc byte[16];
        long dataIn = writable - 1; // the last writable byte is the status
        byte status;
        uint dataWritten = 0;
        if (q.ReadChain(chain, 0, header) != 16) status = StatusIoErr;
        else
        {
            uint type = BinaryPrimitives.ReadUInt32LittleEndian(header);
            ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
            long dataOut = readable - 16;
            (status, dataWritten) = type switch
            {
                TypeIn => (In(q, chain, sector, dataIn), (uint)Math.Min(dataIn, uint.MaxValue - 1)),
                TypeOut => (Out(q, chain, sector, dataOut), 0u),
                TypeFlush => (Flush(), 0u),
                TypeGetId => GetId(q, chain, dataIn),
                TypeDiscard or TypeWriteZeroes => (Zeroes(q, chain, dataOut), 0u),
                _ => (StatusUnsupported, 0u),
            };
            if (status != StatusOk && type == TypeIn) dataWritten = 0;
        }
        Span<byte> s1 = [status];
        q.WriteChain(chain, dataIn, s1);
        return dataWritten + 1;
    }

    private bool InRange(ulong sector, long bytes) =>
        Disk != null && bytes >= 0 && bytes % Disk.SectorSize == 0 && sector <= (ulong)Disk.Sectors && (ulong)(bytes / Disk.SectorSize) <= (ulong)Disk.Sectors - sector;

    private byte In(Virtqueue q, VirtqSegment[] chain, ulong sector, long bytes)
    {
        if (!InRange(sector, bytes)) return StatusIoErr;
        long offset = (long)sector * Disk.SectorSize;
        for (long at = 0; at < bytes; at += _buffer.Length)
        {
            int n = (int)Math.Min(_buffer.Length, bytes - at);
            Disk!.Read(offset + at, _buffer.AsSpan(0, n));
            if (q.WriteChain(chain, at, _buffer.AsSpan(0, n)) != n) return StatusIoErr;
        }
        return StatusOk;
    }

    private byte Out(Virtqueue q, VirtqSegment[] chain, ulong sector, long bytes)
    {
        if (!InRange(sector, bytes)) return StatusIoErr;
        if (Disk!.ReadOnly) return StatusIoErr;
        long offset = (long)sector * Disk.SectorSize;
        // Pieces end on block boundaries, so a block the request covers is written whole in one piece
        // (post-copy: such a block need not arrive first, see EnsureBlocksPresent).
        for (long at = 0, n; at < bytes; at += n)
        {
            n = Math.Min(Disk.BlockSize - ((offset + at) & (Disk.BlockSize - 1)), bytes - at);
            if (q.ReadChain(chain, 16 + at, _buffer.AsSpan(0, (int)n)) != n) return StatusIoErr;
            Disk.Write(offset + at, _buffer.AsSpan(0, (int)n));
        }
        return StatusOk;
    }

    private byte Flush()
    {
        if (Disk == null) return StatusIoErr;
        Disk.Flush();
        return StatusOk;
    }

    private (byte, uint) GetId(Virtqueue q, VirtqSegment[] chain, long room)
    {
        if (room < IdBytes) return (StatusIoErr, 0);
        Span<byte> id = stackalloc byte[IdBytes];
        Serial.AsSpan(0, Math.Min(Serial.Length, IdBytes)).CopyTo(id);
        return q.WriteChain(chain, 0, id) == IdBytes ? (StatusOk, (uint)IdBytes) : (StatusIoErr, 0u);
    }

    private byte Zeroes(Virtqueue q, VirtqSegment[] chain, long bytes)
    {
        if (Disk == null || bytes <= 0 || bytes % 16 != 0) return StatusIoErr;
        if (Disk.ReadOnly) return StatusIoErr;
        Span<byte> range = stackalloc byte[16];
        // Every range is checked before any is applied: a bad one fails the request untouched.
        for (int pass = 0; pass < 2; pass++)
            for (long at = 0; at < bytes; at += 16)
            {
                if (q.ReadChain(chain, 16 + at, range) != 16) return StatusIoErr;
                ulong sector = BinaryPrimitives.ReadUInt64LittleEndian(range);
                uint sectors = BinaryPrimitives.ReadUInt32LittleEndian(range[8..]);
                if (sectors > MaxRangeSectors || !InRange(sector, (long)sectors * Disk.SectorSize)) return StatusIoErr;
                if (pass == 1) Disk.WriteZeroes((long)sector * Disk.SectorSize, (long)sectors * Disk.SectorSize);
            }
        return StatusOk;
    }

    public void Reset()
    {
        _pending.Clear(); // a driver reset abandons what is in flight, as a real device's does
        _announce = false;
    }

    // ---- State ----

    public void Save(StateWriter w)
    {
        w.BeginSection("VBLK", StateVersion);
        WriteFields(w);
        w.EndSection();
    }

    public void WriteDigestState(StateWriter w)
    {
        w.Bytes("VBLK"u8);
        WriteFields(w);
        w.U64(Disk?.ContentDigest ?? 0);
    }

    private void WriteFields(StateWriter w)
    {
        w.Bool(Disk?.ReadOnly ?? false);
        w.U64((ulong)(Disk?.BlockCount ?? 0));
        w.U64((ulong)Requests);
        w.U32((uint)_pending.Count);
        foreach (var r in _pending)
        {
            w.U16(r.Head);
            w.U32((uint)r.Segments.Length);
            foreach (var s in r.Segments)
            {
                w.U64(s.Address);
                w.U32(s.Length);
                w.Bool(s.DeviceWritable);
            }
        }
    }

    public Action Restore(StateReader r)
    {
        r.OpenSection("VBLK", 1, StateVersion);
        bool readOnly = r.Bool();
        ulong blocks = r.U64(), requests = r.U64();
        uint count = r.U32();
        if (readOnly != (Disk?.ReadOnly ?? false) || blocks != (ulong)(Disk?.BlockCount ?? 0))
            throw new InvalidDataException($"saved virtio-blk has a {(readOnly ? "read-only" : "writable")} disk of {blocks} blocks; this machine's is {(Disk == null ? "absent" : $"{(Disk.ReadOnly ? "read-only" : "writable")} with {Disk.BlockCount} blocks")}");
        if (count > Size) throw new InvalidDataException($"saved virtio-blk has {count} requests in flight; the queue holds {Size}");
        var pending = new List<Request>((int)count);
        for (int i = 0; i < count; i++)
        {
            ushort head = r.U16();
            uint n = r.U32();
            if (head >= Size || n == 0 || n > Size * 2) throw new InvalidDataException($"saved virtio-blk request {i} is malformed");
            var segments = new VirtqSegment[n];
            for (int j = 0; j < n; j++) segments[j] = new VirtqSegment(r.U64(), r.U32(), r.Bool());
            pending.Add(new Request(head, segments));
        }
        r.CloseSection();
        if (requests > long.MaxValue) throw new InvalidDataException("saved virtio-blk has a bad request count");
        return () =>
        {
            _pending.Clear();
            _pending.AddRange(pending);
            Requests = (long)requests;
            _announce = _pending.Count > 0; // the new port decides when they complete
        };
    }
}
