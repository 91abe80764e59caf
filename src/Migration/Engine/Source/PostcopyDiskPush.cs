using LiveMigration.Guest.Devices.Virtio.Block;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Post-copy of the disk, source side: the blocks the destination lacks (from the paused guest's
/// disk snapshot), each sent once, those a guest request asks for (<see cref="DiskBlockRequest"/>,
/// with a few following ones, as pages are pre-paged) before the background push, which goes a small
/// batch at a time behind RAM. Each block travels with its hash; zero blocks as markers.
/// </summary>
internal sealed class PostcopyDiskPush
{
    /// <summary>Blocks sent after a requested run (guests read on).</summary>
    private const int PrefetchBlocks = 8;
    private const int PushBatchBlocks = 64;

    private readonly SourceContext _ctx;
    private readonly DiskSnapshot _snapshot;
    private readonly long[] _blocks;
    private readonly SendOnceSlots _slots;
    private readonly List<int> _taken = new(DiskTransfer.BatchBlocks);
    private readonly List<long> _batch = new(DiskTransfer.BatchBlocks);
    private long _total, _requested;

    /// <param name="blocks">The blocks the destination lacks, ascending (a slot is an index into it).</param>
    /// <param name="sent">Per slot: already sent (or already at the destination).</param>
    public PostcopyDiskPush(SourceContext ctx, DiskSnapshot snapshot, long[] blocks, bool[] sent)
    {
        _ctx = ctx;
        _snapshot = snapshot;
        _blocks = blocks;
        _slots = new SendOnceSlots(sent);
    }

    public int Remaining => _slots.Remaining;
    public long Sent => _total;

    /// <summary>Sends the unsent blocks of [first, first + count) and a few after them; false when none was left to send.</summary>
    public bool SendRequested(Connection conn, long first, long count)
    {
        _taken.Clear();
        int i = Array.BinarySearch(_blocks, first);
        if (i < 0) i = ~i;
        for (; i < _blocks.Length && _blocks[i] < first + count; i++) _slots.Take(i, _taken);
        if (_taken.Count == 0) return false;
        _requested += _taken.Count;
        for (int k = 0; k < PrefetchBlocks; i++, k++) _slots.Take(i, _taken);
        Send(conn);
        return true;
    }

    /// <summary>The next few unsent blocks, in order.</summary>
    public void SendBackground(Connection conn)
    {
        _taken.Clear();
        _slots.TakeNext(PushBatchBlocks, _taken);
        Send(conn);
    }

    private void Send(Connection conn)
    {
        if (_taken.Count == 0) return;
        _batch.Clear();
        foreach (int slot in _taken) _batch.Add(_blocks[slot]);
        foreach (var message in DiskTransfer.Encode(_snapshot, _batch, _ctx.Host.Options.CorruptPostcopyBlock))
            conn.Send(new Envelope { DiskBlocks = message }, ByteCategory.Disk);
        _total += _batch.Count;
    }

    /// <summary>The slots of <paramref name="absent"/> in <paramref name="blocks"/> unsent, every other slot sent (a resume).</summary>
    public static bool[] SentExcept(long[] blocks, IEnumerable<ulong> absent)
    {
        var sent = new bool[blocks.Length];
        Array.Fill(sent, true);
        foreach (ulong b in absent)
        {
            int i = Array.BinarySearch(blocks, (long)b);
            if (i < 0) throw new MigrationFailedException($"the destination lacks disk block {b}, which was not sent post-copy");
            sent[i] = false;
        }
        return sent;
    }

    public void FillReport(MigrationReport report)
    {
        report.PostcopyDiskBlocks = (ulong)_total;
        report.PostcopyRequestedDiskBlocks = (ulong)_requested;
    }
}
