using System.IO.Hashing;
using Google.Protobuf;
using LiveMigration.Guest.Memory;
using LiveMigration.Migration.Hosting;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;
using LiveMigration.Trace.Compression;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Sends the manifest pages not yet marked sent, each once: requested pages (with a few following
/// ones as pre-paging) before the background push, which goes a small batch at a time so a
/// request never waits long behind it. The disk's missing blocks (<see cref="PostcopyDiskPush"/>)
/// share the loop: requested blocks as soon as they are asked for, the rest after the pages.
/// </summary>
internal sealed class PostcopyPush
{
    /// <summary>Pages sent after a requested one (pre-paging: guests tend to walk forward).</summary>
    private const int PrepagePages = 4;
    /// <summary>
    /// A requested page waits for the push batch on the link ahead of it: 16 pages (64 KiB, ~0.5 ms at
    /// 1 Gbit/s) rather than 64 served a dirty guest's requests in 0.5–0.6 ms instead of 2–3 ms (bench/Compare).
    /// </summary>
    private const int PushBatchPages = 16;

    private readonly SourceContext _ctx;
    private readonly int[] _pages;
    private readonly GuestMemory _memory;
    private readonly Dictionary<int, int> _slotOf;
    private readonly SendOnceSlots _slots;
    private readonly PostcopyDiskPush? _disk;
    private readonly byte[] _raw = new byte[PushBatchPages * GuestMemory.PageSize];
    private readonly byte[] _compressed = new byte[Zstd.CompressBound(PushBatchPages * GuestMemory.PageSize)];
    private long _total, _requested, _prepaged;
    private volatile int _sentCount;

    /// <param name="pages">The manifest's pages, in order (a slot is an index into it).</param>
    /// <param name="sent">Per slot: already sent (or already at the destination).</param>
    /// <param name="disk">The disk blocks still to send (null: none).</param>
    public PostcopyPush(SourceContext ctx, int[] pages, bool[] sent, PostcopyDiskPush? disk)
    {
        _disk = disk;
        _ctx = ctx;
        _pages = pages;
        _memory = ctx.Guest.Machine.Memory;
        _slotOf = SlotIndex(pages);
        _slots = new SendOnceSlots(sent);
        ToSend = Remaining;
    }

    public int Remaining => _slots.Remaining;
    /// <summary>For progress: pages this push has to send, and has sent.</summary>
    public int ToSend { get; }
    public int Sent => _sentCount;

    public static Dictionary<int, int> SlotIndex(int[] pages)
    {
        var index = new Dictionary<int, int>(pages.Length);
        for (int i = 0; i < pages.Length; i++) index[pages[i]] = i;
        return index;
    }

    /// <summary>Sends every page not yet sent; throws when the link fails or the destination aborts.</summary>
    public void Run(Connection conn)
    {
        double t0 = _ctx.Now;
        var requests = _ctx.ReturnPath.PageRequests;
        var blockRequests = _ctx.ReturnPath.BlockRequests;
        var slots = new List<int>(PushBatchPages);
        while (Remaining > 0 || _disk is { Remaining: > 0 })
        {
            slots.Clear();
            _ctx.ReturnPath.ThrowIfEnded();
            while (slots.Count < PushBatchPages && requests.TryTake(out int page))
            {
                if (page < 0) throw new IOException($"lost the connection to the destination: {_ctx.ReturnPath.ErrorMessage}");
                if (!_slotOf.TryGetValue(page, out int slot)) continue; // not in the manifest
                if (!_slots.Take(slot, slots)) continue; // already sent
                _requested++;
                for (int k = 1; k <= PrepagePages; k++)
                    if (_slots.Take(slot + k, slots)) _prepaged++;
            }
            bool blocksAsked = false;
            if (_disk != null)
                while (blockRequests.TryDequeue(out var r)) blocksAsked |= _disk.SendRequested(conn, r.First, r.Count);
            if (slots.Count == 0 && !blocksAsked)
            {
                if (Remaining > 0) _slots.TakeNext(PushBatchPages, slots);
                else _disk?.SendBackground(conn); // RAM first: a missing page stalls the guest's CPU, a block one request
            }
            SendBatch(conn, slots);
        }
        _ctx.Log($"post-copy: {_total} pages sent in {(_ctx.Now - t0) * 1000:F1} ms ({_requested} requested, {_prepaged} pre-paged)" +
            (_disk != null ? $", {_disk.Sent} disk blocks" : ""));
    }

    private void SendBatch(Connection conn, List<int> slots)
    {
        if (slots.Count == 0) return;
        var batch = new PageBatch();
        var corrupt = _ctx.Host.Options.CorruptPostcopyPage;
        for (int i = 0; i < slots.Count; i++)
        {
            int page = _pages[slots[i]];
            var data = _raw.AsSpan(i * GuestMemory.PageSize, GuestMemory.PageSize);
            _memory.PageSpan(page).CopyTo(data);
            batch.Pages.Add((uint)page);
            batch.Hashes.Add(XxHash3.HashToUInt64(data));
            if (corrupt?.Invoke(page) == true) data[100] ^= 0x5A;
        }
        int n = Zstd.Compress(_raw.AsSpan(0, slots.Count * GuestMemory.PageSize), _compressed, PageSender.CompressionLevel);
        batch.Zstd = ByteString.CopyFrom(_compressed, 0, n);
        conn.Send(new Envelope { PostcopyPages = batch }, ByteCategory.Postcopy);
        if (_total == 0) _ctx.Fault(FaultPoint.Postcopy);
        _total += slots.Count;
        _sentCount = (int)_total;
    }

    public void FillReport(MigrationReport report)
    {
        report.PostcopyPages = (ulong)_total;
        report.PostcopyRequestedPages = (ulong)_requested;
        report.PostcopyPrepagedPages = (ulong)_prepaged;
        _disk?.FillReport(report);
    }
}
