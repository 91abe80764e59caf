using Google.Protobuf;
using LiveMigration.Guest.Memory;
using LiveMigration.Trace.Compression;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Sends a memory image page by page: all-zero pages as (first, count) runs in
/// <see cref="ZeroPages"/> messages, the others in zstd-compressed <see cref="PageBatch"/>es of up
/// to <see cref="BatchPages"/> pages. The source of pages is either live RAM of a paused guest or a
/// copy-on-write snapshot of a running one.
/// </summary>
public sealed class PageSender
{
    public const int BatchPages = 256;
    public const int CompressionLevel = 1;

    public int PagesSent { get; private set; }
    public int ZeroPages { get; private set; }
    public long RawBytes { get; private set; }
    /// <summary>Progress for the display: pages examined so far.</summary>
    public int PagesDone => _done;
    private volatile int _done;

    public void Send(Connection conn, int pageCount, Func<int, bool> isZero, Action<int, Span<byte>> readPage,
        ByteCategory category, CancellationToken cancel, Action? afterFirstBatch = null)
    {
        var raw = new byte[BatchPages * GuestMemory.PageSize];
        var compressed = new byte[Zstd.CompressBound(raw.Length)];
        var batch = new PageBatch();
        var zeros = new ZeroPages();
        int inBatch = 0;
        bool first = true;
        uint runStart = 0, runCount = 0;

        void FlushBatch()
        {
            if (inBatch == 0) return;
            int n = Zstd.Compress(raw.AsSpan(0, inBatch * GuestMemory.PageSize), compressed, CompressionLevel);
            batch.Zstd = ByteString.CopyFrom(compressed, 0, n);
            conn.Send(new Envelope { Pages = batch }, category, cancel);
            RawBytes += inBatch * GuestMemory.PageSize;
            batch = new PageBatch();
            inBatch = 0;
            if (first) { first = false; afterFirstBatch?.Invoke(); }
        }

        void FlushZeroRun()
        {
            if (runCount == 0) return;
            zeros.First.Add(runStart);
            zeros.Count.Add(runCount);
            runCount = 0;
            if (zeros.First.Count >= 4096)
            {
                conn.Send(new Envelope { ZeroPages = zeros }, category, cancel);
                zeros = new ZeroPages();
            }
        }

        for (int page = 0; page < pageCount; page++)
        {
            cancel.ThrowIfCancellationRequested();
            if (isZero(page))
            {
                if (runCount == 0) runStart = (uint)page;
                runCount++;
                ZeroPages++;
            }
            else
            {
                FlushZeroRun();
                readPage(page, raw.AsSpan(inBatch * GuestMemory.PageSize, GuestMemory.PageSize));
                batch.Pages.Add((uint)page);
                inBatch++;
                PagesSent++;
                if (inBatch == BatchPages) FlushBatch();
            }
            _done = page + 1;
        }
        FlushZeroRun();
        FlushBatch();
        if (zeros.First.Count > 0) conn.Send(new Envelope { ZeroPages = zeros }, category, cancel);
    }
}

/// <summary>Applies <see cref="PageBatch"/> and <see cref="ZeroPages"/> messages to guest memory.</summary>
public static class PageReceiver
{
    public static void Apply(GuestMemory memory, PageBatch batch)
    {
        int count = batch.Pages.Count;
        if (count == 0 || count > PageSender.BatchPages) throw new ProtocolException($"page batch of {count} pages");
        var raw = new byte[count * GuestMemory.PageSize];
        int n = Zstd.Decompress(batch.Zstd.Span, raw);
        if (n != raw.Length) throw new ProtocolException($"page batch decompressed to {n} bytes, expected {raw.Length}");
        for (int i = 0; i < count; i++)
        {
            uint page = batch.Pages[i];
            if (page >= memory.PageCount) throw new ProtocolException($"page {page} is beyond the end of memory ({memory.PageCount} pages)");
            memory.WritePage((int)page, raw.AsSpan(i * GuestMemory.PageSize, GuestMemory.PageSize));
        }
    }

    public static void Apply(GuestMemory memory, ZeroPages zeros)
    {
        if (zeros.First.Count != zeros.Count.Count) throw new ProtocolException("zero-page runs with mismatched lists");
        for (int i = 0; i < zeros.First.Count; i++)
        {
            ulong end = (ulong)zeros.First[i] + zeros.Count[i];
            if (end > (ulong)memory.PageCount) throw new ProtocolException("zero-page run beyond the end of memory");
            for (uint p = zeros.First[i]; p < end; p++) memory.ZeroPage((int)p);
        }
    }
}
