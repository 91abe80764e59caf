using System.Buffers.Binary;
using System.IO.Hashing;
using System.Runtime.InteropServices;

namespace LiveMigration.Guest.Devices.Virtio.Block;

/// <summary>
/// A disk as machine state: the base image (the backing store's contents when the disk was
/// opened, identified by <see cref="BaseIdentity"/>) under a copy-on-write overlay of 4 KiB blocks
/// that holds every block written since. Per-block hashes are kept current on write and summed
/// into <see cref="ContentDigest"/> (as RAM's page hashes are), so a digest costs nothing extra.
/// A <see cref="Snapshot"/> shares the overlay's blocks (the next write to a shared block copies
/// it), so a checkpoint holds the disk at its icount without copying it. <see cref="Flush"/>
/// commits the blocks written since the last flush to the store and syncs it; the base contents a
/// commit overwrites are kept (in memory) for the snapshots and the overlay that still refer to them.
/// </summary>
public sealed partial class Disk : IDisposable
{
    public const int BlockShift = 12;
    public const int BlockSize = 1 << BlockShift;
    public const int SectorSize = 512;

    /// <summary>The largest image a disk opens: 64 GiB (the overlay keeps one reference per block).</summary>
    public const long MaxLength = 64L << 30;

    public static readonly ulong ZeroBlockHash = XxHash3.HashToUInt64(new byte[BlockSize]);

    private readonly IDiskBacking _backing;
    private readonly byte[]?[] _overlay;
    private readonly bool[] _owned;       // the overlay block is referenced by no snapshot: write it in place
    private readonly ulong[] _hash;
    private readonly ulong[] _baseHash;
    private readonly bool[] _unflushed;   // written (or reverted) since the last commit
    private readonly byte[]?[] _original; // base contents of blocks whose store copy a commit replaced
    private readonly object _baseLock = new();
    private ulong _digest;
    private int _unflushedCount;

    private Disk(IDiskBacking backing, bool readOnly, long blocks)
    {
        _backing = backing;
        ReadOnly = readOnly;
        BlockCount = blocks;
        _overlay = new byte[]?[blocks];
        _owned = new bool[blocks];
        _hash = new ulong[blocks];
        _baseHash = new ulong[blocks];
        _unflushed = new bool[blocks];
        _original = new byte[]?[blocks];
    }

    /// <summary>Why a store of <paramref name="length"/> bytes cannot be a disk, or null when it can.</summary>
    public static string? LengthProblem(long length) =>
        length <= 0 ? "the image is empty"
        : length % BlockSize != 0 ? $"the image is {length} bytes, not a multiple of 4 KiB"
        : length > MaxLength ? $"the image is {length} bytes, more than 64 GiB"
        : null;

    /// <summary>Opens a disk on <paramref name="backing"/>, hashing every block of the base (one read of the image).</summary>
    /// <param name="readOnly">The guest sees a read-only disk (VIRTIO_BLK_F_RO) and can never write it.</param>
    public static Disk Open(IDiskBacking backing, bool readOnly = false)
    {
        if (LengthProblem(backing.Length) is { } problem) throw new InvalidDataException(problem);
        var disk = new Disk(backing, readOnly, backing.Length >> BlockShift);
        var chunk = new byte[256 * BlockSize];
        for (long b = 0; b < disk.BlockCount; b += 256)
        {
            int n = (int)Math.Min(256, disk.BlockCount - b);
            backing.Read(b << BlockShift, chunk.AsSpan(0, n * BlockSize));
            for (int i = 0; i < n; i++) disk._hash[b + i] = XxHash3.HashToUInt64(chunk.AsSpan(i * BlockSize, BlockSize));
        }
        return disk.Hashed();
    }

    /// <summary>
    /// Opens a disk on <paramref name="backing"/> whose block hashes the caller already knows (a
    /// migration destination that hashed the base it copied, or a store of zeros): nothing is read.
    /// </summary>
    public static Disk Open(IDiskBacking backing, bool readOnly, ReadOnlySpan<ulong> blockHashes)
    {
        if (LengthProblem(backing.Length) is { } problem) throw new InvalidDataException(problem);
        var disk = new Disk(backing, readOnly, backing.Length >> BlockShift);
        if (blockHashes.Length != disk.BlockCount) throw new ArgumentException($"{blockHashes.Length} block hashes for a disk of {disk.BlockCount} blocks");
        blockHashes.CopyTo(disk._hash);
        return disk.Hashed();
    }

    private Disk Hashed()
    {
        _digest = ContentDigestOf(_hash);
        _hash.CopyTo(_baseHash, 0);
        BaseIdentity = Identity(_hash);
        return this;
    }

    /// <summary>The <see cref="ContentDigest"/> of a disk whose blocks have these hashes.</summary>
    public static ulong ContentDigestOf(ReadOnlySpan<ulong> blockHashes)
    {
        ulong digest = 0;
        for (int b = 0; b < blockHashes.Length; b++) digest += Mix(b, blockHashes[b]);
        return digest;
    }

    /// <summary>An image's identity: xxh3-64 of its block count and block hashes (what a trace and a migration name).</summary>
    public static ulong Identity(ReadOnlySpan<ulong> blockHashes)
    {
        var h = new XxHash3();
        Span<byte> n = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(n, blockHashes.Length);
        h.Append(n);
        h.Append(MemoryMarshal.AsBytes(blockHashes));
        return h.GetCurrentHashAsUInt64();
    }

    public long BlockCount { get; }
    public long Length => BlockCount << BlockShift;
    public long Sectors => Length / SectorSize;
    public bool ReadOnly { get; }

    /// <summary>Whether <see cref="Flush"/> writes the store (not when the host opened it read-only, e.g. for a replay).</summary>
    public bool Commits => _backing.Writable && !ReadOnly;

    /// <summary>The identity of the base image this disk was opened on.</summary>
    public ulong BaseIdentity { get; private set; }

    /// <summary>The disk's contents now, order-independent over (block, hash): changes in O(1) per block written.</summary>
    public ulong ContentDigest => _digest;

    /// <summary>The identity of the contents now (<see cref="Identity"/> of the current block hashes): O(blocks).</summary>
    public ulong CurrentIdentity() => Identity(_hash);

    public ulong BlockHash(long block) => _hash[block];
    public ReadOnlySpan<ulong> BlockHashes => _hash;

    /// <summary>The base image's block hashes (as opened).</summary>
    public ReadOnlySpan<ulong> BaseBlockHashes => _baseHash;

    /// <summary>Blocks held in the overlay (written since the disk was opened).</summary>
    public long OverlayBlocks { get { long n = 0; foreach (var b in _overlay) if (b != null) n++; return n; } }

    public bool InOverlay(long block) => _overlay[block] != null;

    public int UnflushedBlocks => _unflushedCount;
    /// <summary>
    /// While set, <see cref="Flush"/> writes nothing (the blocks stay unflushed, the next flush after
    /// it is cleared commits them): a migration over shared storage, whose destination replays from
    /// the file as it was at C0, or which has moved ownership of the file to the destination.
    /// </summary>
    public bool CommitsHeld { get; set; }

    /// <summary>Flushes that reached the store.</summary>
    public long CommitCount { get; private set; }

    /// <summary>Bytes of the guest's reads and writes (for reports and tests).</summary>
    public long BytesRead { get; private set; }
    public long BytesWritten { get; private set; }

    public bool Contains(long offset, long length) => offset >= 0 && length >= 0 && offset <= Length && length <= Length - offset;

    public void Read(long offset, Span<byte> destination)
    {
        if (_arrival != null) { lock (_arrivalLock) ReadLocked(offset, destination); return; }
        ReadLocked(offset, destination);
    }

    private void ReadLocked(long offset, Span<byte> destination)
    {
        BytesRead += destination.Length;
        while (!destination.IsEmpty)
        {
            long block = offset >> BlockShift;
            int at = (int)(offset & (BlockSize - 1));
            int n = Math.Min(BlockSize - at, destination.Length);
            if (_arrival != null) ThrowIfAbsent(block);
            if (_overlay[block] is { } data) data.AsSpan(at, n).CopyTo(destination);
            else ReadBase(block, at, destination[..n]);
            destination = destination[n..];
            offset += n;
        }
    }

    public void Write(long offset, ReadOnlySpan<byte> data) => Store(offset, data.Length, data, zeroes: false);

    public void WriteZeroes(long offset, long length) => Store(offset, length, default, zeroes: true);

    /// <summary>Writes <paramref name="data"/> (or zeroes) block by block, each block rehashed once.</summary>
    private void Store(long offset, long length, ReadOnlySpan<byte> data, bool zeroes)
    {
        if (_arrival != null) { lock (_arrivalLock) StoreLocked(offset, length, data, zeroes); return; }
        StoreLocked(offset, length, data, zeroes);
    }

    private void StoreLocked(long offset, long length, ReadOnlySpan<byte> data, bool zeroes)
    {
        BytesWritten += length;
        while (length > 0)
        {
            long block = offset >> BlockShift;
            int at = (int)(offset & (BlockSize - 1));
            int n = (int)Math.Min(BlockSize - at, length);
            if (_arrival != null) Overwriting(block, whole: n == BlockSize);
            var target = WritableBlock(block, whole: n == BlockSize);
            if (zeroes) target.AsSpan(at, n).Clear();
            else
            {
                data[..n].CopyTo(target.AsSpan(at));
                data = data[n..];
            }
            Rehash(block, target);
            length -= n;
            offset += n;
        }
    }

    /// <summary>Reads one whole block of the current contents.</summary>
    public void ReadBlock(long block, Span<byte> destination)
    {
        if (_overlay[block] is { } data) data.CopyTo(destination);
        else ReadBase(block, 0, destination[..BlockSize]);
    }

    /// <summary>Replaces one whole block (a migration applying a received block); the hash is recomputed.</summary>
    public void WriteBlock(long block, ReadOnlySpan<byte> data)
    {
        var target = WritableBlock(block, whole: true);
        data[..BlockSize].CopyTo(target);
        Rehash(block, target);
    }

    private byte[] WritableBlock(long block, bool whole)
    {
        var current = _overlay[block];
        if (current != null && _owned[block]) return current;
        var copy = new byte[BlockSize];
        if (current != null) current.CopyTo(copy, 0);
        else if (!whole) ReadBase(block, 0, copy);
        _overlay[block] = copy;
        _owned[block] = true;
        return copy;
    }

    private void Rehash(long block, byte[] data)
    {
        ulong hash = XxHash3.HashToUInt64(data);
        _digest += Mix(block, hash) - Mix(block, _hash[block]);
        _hash[block] = hash;
        if (!_unflushed[block]) { _unflushed[block] = true; _unflushedCount++; }
    }

    /// <summary>The base image's contents of a block (its original, once a commit replaced the store's copy).</summary>
    internal void ReadBase(long block, int at, Span<byte> destination)
    {
        lock (_baseLock)
        {
            if (_original[block] is { } original) original.AsSpan(at, destination.Length).CopyTo(destination);
            else _backing.Read((block << BlockShift) + at, destination);
        }
    }

    /// <summary>
    /// Commits every block written since the last flush to the store and syncs it: what the guest
    /// flushed survives a host crash. Does nothing on a disk that does not commit.
    /// </summary>
    public void Flush()
    {
        if (_arrival != null) { lock (_arrivalLock) FlushLocked(); return; }
        FlushLocked();
    }

    private void FlushLocked()
    {
        if (!Commits || CommitsHeld || _unflushedCount == 0) return;
        for (long b = 0; b < BlockCount; b++)
        {
            if (!_unflushed[b]) continue;
            lock (_baseLock)
            {
                if (_original[b] == null)
                {
                    var original = new byte[BlockSize];
                    _backing.Read(b << BlockShift, original);
                    _original[b] = original;
                }
                _backing.Write(b << BlockShift, _overlay[b] ?? _original[b]!);
            }
            _unflushed[b] = false;
        }
        _unflushedCount = 0;
        _backing.Sync();
        CommitCount++;
    }

    /// <summary>A copy-on-write view of the disk now; the guest may keep writing.</summary>
    public DiskSnapshot Snapshot()
    {
        EnsureAllPresent();
        Array.Clear(_owned);
        return new DiskSnapshot(this, (byte[]?[])_overlay.Clone(), (ulong[])_hash.Clone(), _digest);
    }

    /// <summary>Returns every block to its contents in <paramref name="snapshot"/> (a snapshot of this disk); returns how many changed.</summary>
    public int RevertTo(DiskSnapshot snapshot)
    {
        if (snapshot.Disk != this) throw new ArgumentException("a snapshot of another disk");
        var hashes = snapshot.BlockHashes;
        var block = new byte[BlockSize];
        int changed = 0;
        for (long b = 0; b < BlockCount; b++)
        {
            if (_hash[b] == hashes[(int)b]) continue;
            snapshot.ReadBlock(b, block);
            WriteBlock(b, block);
            changed++;
        }
        return changed;
    }

    /// <summary>Sets the overlay to <paramref name="blocks"/> (index → contents, null = base), everything else base. Validated by the caller.</summary>
    internal void ApplyOverlay(IReadOnlyDictionary<long, byte[]> blocks)
    {
        var buffer = new byte[BlockSize];
        for (long b = 0; b < BlockCount; b++)
        {
            bool had = _overlay[b] != null;
            if (blocks.TryGetValue(b, out var data))
            {
                _overlay[b] = data;
                _owned[b] = true;
            }
            else if (had) _overlay[b] = null;
            else continue;
            var now = _overlay[b];
            if (now == null) { ReadBase(b, 0, buffer); now = buffer; }
            Rehash(b, now);
        }
    }

    internal static ulong Mix(long block, ulong hash)
    {
        ulong z = hash ^ ((ulong)(block + 1) * 0x9E37_79B9_7F4A_7C15UL);
        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EBUL;
        return z ^ (z >> 31);
    }

    public void Dispose() => _backing.Dispose();
}

/// <summary>The disk at one moment (<see cref="Disk.Snapshot"/>): its blocks are never written again.</summary>
public sealed class DiskSnapshot
{
    private readonly Disk _disk;
    private readonly byte[]?[] _overlay;
    private readonly ulong[] _hash;

    internal DiskSnapshot(Disk disk, byte[]?[] overlay, ulong[] hash, ulong digest)
    {
        _disk = disk;
        _overlay = overlay;
        _hash = hash;
        ContentDigest = digest;
    }

    public Disk Disk => _disk;
    public long BlockCount => _overlay.LongLength;
    public ulong ContentDigest { get; }
    public ReadOnlySpan<ulong> BlockHashes => _hash;
    public bool InOverlay(long block) => _overlay[block] != null;

    public void ReadBlock(long block, Span<byte> destination)
    {
        if (_overlay[block] is { } data) data.CopyTo(destination);
        else _disk.ReadBase(block, 0, destination[..Disk.BlockSize]);
    }
}
