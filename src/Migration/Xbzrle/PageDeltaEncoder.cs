using LiveMigration.Guest;
using LiveMigration.Guest.Memory;

namespace LiveMigration.Migration.Xbzrle;

/// <summary>How one page travels in a pre-copy round. Wire values: never reuse a number.</summary>
public enum PageEncoding : byte
{
    /// <summary>The guest reported the page free: nothing is sent; the receiver zeroes it.</summary>
    Free = 0,
    /// <summary>All zeros: a marker only.</summary>
    Zero = 1,
    /// <summary>Identical to the copy the receiver holds in its cache: nothing is sent.</summary>
    Unchanged = 2,
    /// <summary>An XBZRLE delta against the receiver's cached copy.</summary>
    Delta = 3,
    /// <summary>The whole page (first send, cache miss, or the delta would not pay).</summary>
    Full = 4,
    /// <summary>An XBZRLE delta against the receiver's current copy of the page in guest memory
    /// (after an auto fallback: its copy at checkpoint C0, which the sender retained).</summary>
    DeltaBase = 5,
}

/// <summary>
/// The per-page decision of pre-copy, shared by every strategy that sends pages: free pages
/// (balloon) and zero pages cost nothing, pages the cache knows go as XBZRLE deltas, the rest whole.
/// The sender and the receiver each hold an <see cref="XbzrlePageCache"/> of the same size and call
/// <see cref="Encode"/> / <see cref="Apply"/> on the same pages in the same order, so the caches agree.
/// Allocation-free per page. Transport (framing, zstd) is the caller's business.
/// </summary>
public sealed class PageDeltaEncoder
{
    private readonly XbzrlePageCache? _cache;

    /// <param name="cache">Null or capacity 0: no deltas, every non-zero page goes whole.</param>
    /// <param name="deltaLimit">Largest delta worth sending; above it the page goes whole. Default: a page.</param>
    public PageDeltaEncoder(XbzrlePageCache? cache, int deltaLimit = GuestMemory.PageSize)
    {
        if (deltaLimit is < 0 or > GuestMemory.PageSize) throw new ArgumentOutOfRangeException(nameof(deltaLimit));
        _cache = cache is { CapacityPages: > 0 } ? cache : null;
        DeltaLimit = deltaLimit;
    }

    public int DeltaLimit { get; }

    /// <summary>Pages and payload bytes per encoding, for the migration report.</summary>
    public PageCounters Counters { get; } = new();

    /// <summary>
    /// Decides how <paramref name="page"/> of <paramref name="machine"/> travels and writes its payload
    /// (the delta, or the page) to <paramref name="payload"/>, which must hold a page.
    /// </summary>
    /// <param name="length">Payload bytes written (0 for Free, Zero, Unchanged).</param>
    public PageEncoding Encode(Machine machine, int page, Span<byte> payload, out int length)
    {
        var kind = EncodeCore(machine, page, payload, out length);
        Counters.Add(kind, length);
        return kind;
    }

    private PageEncoding EncodeCore(Machine machine, int page, Span<byte> payload, out int length)
    {
        length = 0;
        if (machine.Balloon.IsFreePage(page))
        {
            _cache?.Remove(page);
            return PageEncoding.Free;
        }
        var memory = machine.Memory;
        if (memory.IsZeroPage(page))
        {
            // The receiver zeroes its copy; keep its cache in step by dropping the page on both sides.
            _cache?.Remove(page);
            return PageEncoding.Zero;
        }
        var current = memory.PageSpan(page);
        if (_cache != null && _cache.TryGet(page, out var old))
        {
            var status = XbzrleCodec.Encode(old, current, payload[..DeltaLimit], out length);
            current.CopyTo(old);
            switch (status)
            {
                case XbzrleEncodeStatus.Unchanged: return PageEncoding.Unchanged;
                case XbzrleEncodeStatus.Encoded: return PageEncoding.Delta;
            }
        }
        else
        {
            _cache?.Insert(page, current);
        }
        current.CopyTo(payload);
        length = GuestMemory.PageSize;
        return PageEncoding.Full;
    }

    /// <summary>
    /// The receiver's side: applies one encoded page to <paramref name="memory"/>, keeping
    /// <paramref name="cache"/> (same size as the sender's) in step.
    /// </summary>
    /// <exception cref="InvalidDataException">A malformed delta, a delta for a page the cache does not hold, or a bad length.</exception>
    public static void Apply(GuestMemory memory, XbzrlePageCache? cache, int page, PageEncoding kind, ReadOnlySpan<byte> payload)
    {
        if ((uint)page >= (uint)memory.PageCount) throw new InvalidDataException($"page {page} is beyond the end of memory");
        if (cache is { CapacityPages: 0 }) cache = null;
        switch (kind)
        {
            case PageEncoding.Free:
            case PageEncoding.Zero:
                if (payload.Length != 0) throw new InvalidDataException($"a {kind} page carries no payload");
                cache?.Remove(page);
                memory.ZeroPage(page);
                break;
            case PageEncoding.Unchanged:
                if (payload.Length != 0) throw new InvalidDataException("an unchanged page carries no payload");
                if (cache == null || !cache.TryGet(page, out _)) throw new InvalidDataException($"page {page} is 'unchanged' but not in the cache");
                break;
            case PageEncoding.Delta:
                if (cache == null || !cache.TryGet(page, out var copy)) throw new InvalidDataException($"delta for page {page}, which is not in the cache");
                XbzrleCodec.Decode(payload, copy);
                memory.WritePage(page, copy);
                break;
            case PageEncoding.Full:
                if (payload.Length != GuestMemory.PageSize) throw new InvalidDataException($"a full page has {payload.Length} bytes");
                if (cache != null)
                {
                    if (cache.TryGet(page, out var c)) payload.CopyTo(c);
                    else cache.Insert(page, payload);
                }
                memory.WritePage(page, payload);
                break;
            default:
                throw new InvalidDataException($"unknown page encoding {(byte)kind}");
        }
    }
}

/// <summary>Pages and payload bytes per <see cref="PageEncoding"/>.</summary>
public sealed class PageCounters
{
    private readonly long[] _pages = new long[6];
    private readonly long[] _bytes = new long[6];

    internal void Add(PageEncoding kind, int bytes)
    {
        _pages[(int)kind]++;
        _bytes[(int)kind] += bytes;
    }

    public long Pages(PageEncoding kind) => _pages[(int)kind];
    public long Bytes(PageEncoding kind) => _bytes[(int)kind];
    public long TotalPayloadBytes => _bytes.Sum();

    public override string ToString() =>
        string.Join(", ", Enum.GetValues<PageEncoding>().Select(k => $"{k} {Pages(k)} pages/{Bytes(k)} B"));
}
