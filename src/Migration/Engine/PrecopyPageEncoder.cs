using Google.Protobuf;
using LiveMigration.Guest;
using LiveMigration.Guest.Memory;
using LiveMigration.Trace.Compression;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Xbzrle;

namespace LiveMigration.Migration.Engine;

/// <summary>Pages per encoding, for the report and for pricing a round.</summary>
internal sealed class PrecopyCounts
{
    public long Xbzrle, XbzrleBytes, Full, Unchanged, Free, Zero;

    /// <summary>Pages that cost wire bytes (markers included); unchanged pages cost nothing.</summary>
    public long Transmitted => Xbzrle + Full + Zero + Free;
}

/// <summary>
/// Pre-copy's one page pipeline, sending side: a balloon-free or zero page goes as a zero-page
/// marker (and leaves the cache); a page the cache holds goes as an XBZRLE delta against the cached
/// copy (kind <see cref="PageEncoding.Delta"/>), or not at all when unchanged; a page the cache does
/// not hold goes, after an auto fallback, as a delta against its C0 copy
/// (<see cref="PageEncoding.DeltaBase"/>: the receiver holds C0 again), otherwise whole. Deltas that
/// would not pay go whole. Pages are batched into zstd <see cref="DeltaPages"/>; a page is copied
/// once before encoding, since the guest may write it meanwhile (its dirty bit brings it back).
/// </summary>
internal sealed class PrecopyPageEncoder(Machine machine, XbzrlePageCache cache, PrecopyCounts counts, Action<Envelope> send)
{
    private const int BatchBytes = 1 << 20;
    private const int BatchPages = 4096;

    private readonly byte[] _current = new byte[GuestMemory.PageSize];
    private readonly byte[] _base = new byte[GuestMemory.PageSize];
    private readonly byte[] _payload = new byte[BatchBytes + GuestMemory.PageSize];
    private readonly byte[] _compressed = new byte[Zstd.CompressBound(BatchBytes + GuestMemory.PageSize)];
    private readonly List<byte> _kinds = [];
    private int _used;
    private DeltaPages _batch = new();
    private ZeroPages _zeros = new();

    /// <summary>The round the next batches belong to (for the receiver's log).</summary>
    public int Round { get; set; }

    /// <param name="c0">After an auto fallback, the checkpoint the receiver returned to; null otherwise.</param>
    public void Send(int page, MachineSnapshot? c0)
    {
        var memory = machine.Memory;
        if (machine.Balloon.IsFreePage(page))
        {
            cache.Remove(page);
            counts.Free++;
            AddZero(page);
            return;
        }
        if (memory.IsZeroPage(page))
        {
            cache.Remove(page);
            counts.Zero++;
            AddZero(page);
            return;
        }
        memory.PageSpan(page).CopyTo(_current);
        var slot = _payload.AsSpan(_used, GuestMemory.PageSize);
        PageEncoding kind;
        int length;
        if (cache.TryGet(page, out var old))
        {
            var status = XbzrleCodec.Encode(old, _current, slot, out length);
            _current.CopyTo(old);
            if (status == XbzrleEncodeStatus.Unchanged) { counts.Unchanged++; return; }
            kind = status == XbzrleEncodeStatus.Encoded ? PageEncoding.Delta : PageEncoding.Full;
        }
        else if (c0 != null)
        {
            c0.Memory.ReadPage(page, _base);
            var status = XbzrleCodec.Encode(_base, _current, slot, out length);
            cache.Insert(page, _current);
            if (status == XbzrleEncodeStatus.Unchanged) { counts.Unchanged++; return; }
            kind = status == XbzrleEncodeStatus.Encoded ? PageEncoding.DeltaBase : PageEncoding.Full;
        }
        else
        {
            cache.Insert(page, _current);
            kind = PageEncoding.Full;
            length = 0;
        }
        if (kind == PageEncoding.Full)
        {
            _current.CopyTo(slot);
            length = GuestMemory.PageSize;
            counts.Full++;
        }
        else
        {
            counts.Xbzrle++;
            counts.XbzrleBytes += length;
        }
        _batch.Pages.Add((uint)page);
        _batch.Lengths.Add((uint)length);
        _kinds.Add((byte)kind);
        _used += length;
        if (_used >= BatchBytes || _batch.Pages.Count >= BatchPages) FlushBatch();
    }

    public void Flush()
    {
        FlushZeros();
        FlushBatch();
    }

    private void AddZero(int page)
    {
        int n = _zeros.First.Count;
        if (n > 0 && _zeros.First[n - 1] + _zeros.Count[n - 1] == (uint)page) _zeros.Count[n - 1]++;
        else
        {
            _zeros.First.Add((uint)page);
            _zeros.Count.Add(1);
            if (_zeros.First.Count >= BatchPages) FlushZeros();
        }
    }

    private void FlushZeros()
    {
        if (_zeros.First.Count == 0) return;
        send(new Envelope { ZeroPages = _zeros });
        _zeros = new ZeroPages();
    }

    private void FlushBatch()
    {
        if (_batch.Pages.Count == 0) return;
        int n = Zstd.Compress(_payload.AsSpan(0, _used), _compressed, PageSender.CompressionLevel);
        _batch.Round = (uint)Round;
        _batch.RawLength = (uint)_used;
        _batch.Kinds = ByteString.CopyFrom(_kinds.ToArray());
        _batch.Zstd = ByteString.CopyFrom(_compressed, 0, n);
        send(new Envelope { DeltaPages = _batch });
        _batch = new DeltaPages();
        _kinds.Clear();
        _used = 0;
    }
}

/// <summary>
/// The receiving side of <see cref="PrecopyPageEncoder"/>: applies a <see cref="DeltaPages"/> batch
/// to guest memory. A delta applies to this side's current copy of the page, which is always the copy
/// the source last sent (the source's cache holds the same bytes), or after a fallback the C0 copy.
/// Everything is checked before it lands: a bad batch is a <see cref="ProtocolException"/>.
/// </summary>
internal sealed class PrecopyPageDecoder
{
    private byte[] _raw = [];
    private readonly byte[] _scratch = new byte[GuestMemory.PageSize];

    public void Apply(GuestMemory memory, DeltaPages batch)
    {
        int count = batch.Pages.Count;
        if (count != batch.Lengths.Count || count != batch.Kinds.Length) throw new ProtocolException("delta page batch with mismatched lists");
        if (batch.RawLength > 64u << 20) throw new ProtocolException($"delta page batch of {batch.RawLength} bytes");
        if (_raw.Length < batch.RawLength) _raw = new byte[batch.RawLength];
        int n = Zstd.Decompress(batch.Zstd.Span, _raw.AsSpan(0, (int)batch.RawLength));
        if (n != batch.RawLength) throw new ProtocolException($"delta page batch decompressed to {n} bytes, expected {batch.RawLength}");
        int offset = 0;
        var kinds = batch.Kinds.Span;
        for (int i = 0; i < count; i++)
        {
            int page = (int)batch.Pages[i];
            int length = (int)batch.Lengths[i];
            if ((uint)page >= (uint)memory.PageCount) throw new ProtocolException($"page {page} is beyond the end of memory");
            if (length > GuestMemory.PageSize || offset + length > n) throw new ProtocolException($"page {page}: payload of {length} bytes overruns the batch");
            var payload = _raw.AsSpan(offset, length);
            offset += length;
            switch ((PageEncoding)kinds[i])
            {
                case PageEncoding.Full:
                    if (length != GuestMemory.PageSize) throw new ProtocolException($"page {page}: a full page of {length} bytes");
                    memory.WritePage(page, payload);
                    break;
                case PageEncoding.Delta:
                case PageEncoding.DeltaBase:
                    memory.PageSpan(page).CopyTo(_scratch);
                    if (!XbzrleCodec.TryDecode(payload, _scratch, out var error, out int at))
                        throw new ProtocolException($"page {page}: bad XBZRLE delta ({XbzrleCodec.Describe(error)} at byte {at})");
                    memory.WritePage(page, _scratch);
                    break;
                default:
                    throw new ProtocolException($"page {page}: unexpected encoding {kinds[i]} in a delta batch");
            }
        }
        if (offset != n) throw new ProtocolException($"delta page batch has {n - offset} trailing bytes");
    }
}
