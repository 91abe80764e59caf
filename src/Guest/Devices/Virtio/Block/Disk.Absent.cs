namespace LiveMigration.Guest.Devices.Virtio.Block;

/// <summary>
/// Post-copy support, as <see cref="Memory.GuestMemory"/> has for pages: blocks that have not
/// arrived yet. virtio-blk makes the blocks a request needs present before it completes the request
/// (<see cref="EnsureReadable"/>, <see cref="EnsureWritable"/>: a block the request overwrites whole
/// need not come first); an absent block is asked of <see cref="BlockFetcher"/>. Blocks arrive
/// through <see cref="SupplyBlock"/> from another thread, so while any is awaited every disk
/// operation takes one lock (none once the last one landed).
/// </summary>
public sealed partial class Disk
{
    private const byte Here = 0, Absent = 1, Overwritten = 2; // Overwritten: the guest wrote it whole first; its copy still comes
    private volatile byte[]? _arrival;
    private readonly object _arrivalLock = new();
    private long _awaited, _absent;

    /// <summary>True while at least one block has not arrived (or was overwritten and its copy is still on the way).</summary>
    public bool HasAbsentBlocks => _arrival != null;
    /// <summary>Blocks whose copy has not arrived yet.</summary>
    public long AwaitedBlocks => Interlocked.Read(ref _awaited);
    /// <summary>Of those, blocks the guest could not read yet (not overwritten meanwhile).</summary>
    public long AbsentBlocks => Interlocked.Read(ref _absent);

    /// <summary>
    /// Asked on the guest thread for absent blocks [first, first + count) a request needs: have them
    /// delivered (<see cref="SupplyBlock"/>) and return true once they are, or false when they cannot
    /// come now (link down): the request then waits, and the machine stops before it completes.
    /// </summary>
    public Func<long, long, bool>? BlockFetcher { get; set; }

    public bool IsAbsent(long block) => _arrival is { } a && Volatile.Read(ref a[block]) == Absent;

    /// <summary>True while the copy of <paramref name="block"/> is still expected (absent, or overwritten first).</summary>
    public bool IsAwaited(long block) => _arrival is { } a && Volatile.Read(ref a[block]) != Here;

    /// <summary>Marks <paramref name="blocks"/> as not yet arrived (a post-copy destination, before the guest resumes).</summary>
    public void MarkAbsent(IEnumerable<long> blocks)
    {
        lock (_arrivalLock)
        {
            var a = _arrival ?? new byte[BlockCount];
            foreach (long b in blocks)
            {
                if (a[b] != Here) continue;
                a[b] = Absent;
                _awaited++;
                _absent++;
            }
            _arrival = _awaited > 0 ? a : null;
        }
    }

    /// <summary>
    /// Delivers a block's contents (any thread; verified by the caller): an absent block takes them,
    /// one the guest overwrote meanwhile keeps its own. False when the block was not awaited (sent twice).
    /// </summary>
    public bool SupplyBlock(long block, ReadOnlySpan<byte> data)
    {
        if (data.Length != BlockSize) throw new ArgumentException("a block is 4096 bytes");
        lock (_arrivalLock)
        {
            var a = _arrival;
            if (a == null || a[block] == Here) return false;
            if (a[block] == Absent)
            {
                WriteBlock(block, data);
                _absent--;
            }
            Volatile.Write(ref a[block], Here);
            if (--_awaited == 0) _arrival = null;
            Monitor.PulseAll(_arrivalLock);
            return true;
        }
    }

    /// <summary>Waits until every block in [first, first + count) can be read; false on timeout.</summary>
    public bool WaitForBlocks(long first, long count, TimeSpan timeout)
    {
        var until = DateTime.UtcNow + timeout;
        lock (_arrivalLock)
        {
            for (long b = first; b < first + count; b++)
                while (IsAbsent(b))
                {
                    var left = until - DateTime.UtcNow;
                    if (left <= TimeSpan.Zero) return false;
                    Monitor.Wait(_arrivalLock, left);
                }
        }
        return true;
    }

    /// <summary>Makes the bytes [offset, offset + length) readable (guest thread); false when a block cannot come now.</summary>
    public bool EnsureReadable(long offset, long length)
    {
        if (_arrival == null || length <= 0) return true;
        return Fetch(offset >> BlockShift, ((offset + length - 1) >> BlockShift) + 1);
    }

    /// <summary>As <see cref="EnsureReadable"/> for a write: only the blocks it covers in part must be here first.</summary>
    public bool EnsureWritable(long offset, long length)
    {
        if (_arrival == null || length <= 0) return true;
        long first = offset >> BlockShift, last = (offset + length - 1) >> BlockShift;
        if ((offset & (BlockSize - 1)) != 0 && !Fetch(first, first + 1)) return false;
        return ((offset + length) & (BlockSize - 1)) == 0 || Fetch(last, last + 1);
    }

    /// <summary>Fetches the absent blocks of [first, end) in runs (one request each), then checks they are all here.</summary>
    private bool Fetch(long first, long end)
    {
        for (long b = first; b < end; b++)
        {
            if (!IsAbsent(b)) continue;
            long run = b;
            while (run < end && IsAbsent(run)) run++;
            // The fetcher is dropped when the last block landed, and a push may land these meanwhile:
            // only a block still absent after asking stops the request.
            BlockFetcher?.Invoke(b, run - b);
            for (long k = b; k < run; k++) if (IsAbsent(k)) return false;
            b = run;
        }
        return true;
    }

    /// <summary>Brings in every absent block (before a save or a snapshot): throws if one cannot come.</summary>
    public void EnsureAllPresent()
    {
        if (_arrival == null) return;
        if (!Fetch(0, BlockCount)) throw new InvalidOperationException("a disk block has not arrived and cannot be fetched now");
    }

    /// <summary>A write reaches an awaited block (under the lock): a whole-block write makes its copy moot; a partial one needs it here.</summary>
    private void Overwriting(long block, bool whole)
    {
        var a = _arrival!;
        if (a[block] != Absent) return;
        if (!whole) ThrowAbsent(block);
        Volatile.Write(ref a[block], Overwritten);
        _absent--;
    }

    private void ThrowIfAbsent(long block)
    {
        if (_arrival is { } a && a[block] == Absent) ThrowAbsent(block);
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private static void ThrowAbsent(long block) =>
        throw new InvalidOperationException($"disk block {block} has not arrived (a request must make its blocks present before it is served)");
}
