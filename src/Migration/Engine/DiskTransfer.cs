using System.IO.Hashing;
using Google.Protobuf;
using LiveMigration.Guest.Devices.Virtio.Block;
using LiveMigration.Migration.Protocol;
using LiveMigration.Trace.Compression;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// Moves a disk's contents between hosts without shared storage, as dsync does: the destination
/// names a base image it holds (<see cref="DescribeBase"/>: its block hashes), the source compares
/// them with its disk's block hashes at the transfer point (kept current on write, so nothing is
/// read or hashed to find the difference) and sends only the blocks that differ
/// (<see cref="Differing"/>); without a base it sends every block. All-zero blocks go as markers,
/// the rest in zstd batches with each block's hash, verified before a byte is written
/// (<see cref="Apply"/>). The strategies call it: log shipping once at C0 (replay regenerates every
/// later write), pre-copy and stop-and-copy once more at the pause for the blocks whose hash
/// changed since the first pass.
/// </summary>
public static class DiskTransfer
{
    public const int BatchBlocks = 256;
    /// <summary>Zero-block markers in one message at most.</summary>
    public const int MaxZeroMarkers = 4096;

    /// <summary>The handshake's description of a base image the destination holds.</summary>
    public static DiskBase DescribeBase(string name, Disk disk)
    {
        var d = new DiskBase { Name = name, Identity = disk.CurrentIdentity() };
        foreach (ulong h in disk.BlockHashes) d.BlockHashes.Add(h);
        return d;
    }

    /// <summary>
    /// Blocks whose hash in <paramref name="source"/> differs from <paramref name="destination"/>'s
    /// (every block when the destination holds no base, or one of another size).
    /// </summary>
    public static List<long> Differing(ReadOnlySpan<ulong> source, IReadOnlyList<ulong>? destination)
    {
        var list = new List<long>();
        bool comparable = destination != null && destination.Count == source.Length;
        for (int b = 0; b < source.Length; b++)
            if (!comparable || destination![b] != source[b]) list.Add(b);
        return list;
    }

    /// <summary>The blocks whose hash changed between two points of the same disk (the second pass of pre-copy).</summary>
    public static List<long> Changed(ReadOnlySpan<ulong> before, ReadOnlySpan<ulong> now)
    {
        var list = new List<long>();
        for (int b = 0; b < now.Length; b++)
            if (before[b] != now[b]) list.Add(b);
        return list;
    }

    /// <summary>Encodes <paramref name="blocks"/> of <paramref name="snapshot"/> as messages (zero markers, zstd batches).</summary>
    /// <param name="corrupt">Test hook: a block it returns true for is damaged after its hash was taken.</param>
    public static IEnumerable<DiskBlocks> Encode(DiskSnapshot snapshot, IReadOnlyList<long> blocks, Func<long, bool>? corrupt = null)
    {
        var raw = new byte[BatchBlocks * Disk.BlockSize];
        var compressed = new byte[Zstd.CompressBound(raw.Length)];
        var message = new DiskBlocks();
        int inBatch = 0;
        var block = new byte[Disk.BlockSize];
        foreach (long b in blocks)
        {
            snapshot.ReadBlock(b, block);
            if (!block.AsSpan().ContainsAnyExcept((byte)0)) { message.ZeroBlocks.Add((ulong)b); }
            else
            {
                block.CopyTo(raw, inBatch * Disk.BlockSize);
                if (corrupt?.Invoke(b) == true) raw[inBatch * Disk.BlockSize + 100] ^= 0x5A;
                message.Blocks.Add((ulong)b);
                message.Hashes.Add(snapshot.BlockHashes[(int)b]);
                inBatch++;
            }
            if (inBatch == BatchBlocks || message.ZeroBlocks.Count >= MaxZeroMarkers)
            {
                yield return Seal(message, raw, inBatch, compressed);
                message = new DiskBlocks();
                inBatch = 0;
            }
        }
        if (inBatch > 0 || message.ZeroBlocks.Count > 0) yield return Seal(message, raw, inBatch, compressed);
    }

    private static DiskBlocks Seal(DiskBlocks message, byte[] raw, int count, byte[] compressed)
    {
        if (count > 0)
        {
            int n = Zstd.Compress(raw.AsSpan(0, count * Disk.BlockSize), compressed, PageSender.CompressionLevel);
            message.Zstd = ByteString.CopyFrom(compressed, 0, n);
        }
        return message;
    }

    /// <summary>
    /// Checks a message completely (block numbers in range, payload length, every block's hash) and
    /// only then writes its blocks into <paramref name="target"/>: a flipped block on the wire is
    /// refused (the caller asks for it again) and leaves the target untouched.
    /// </summary>
    public static int Apply(DiskBlocks message, IDiskBacking target) =>
        Apply(message, target.Length / Disk.BlockSize, (b, data) => target.Write(b * Disk.BlockSize, data));

    /// <summary>As <see cref="Apply(DiskBlocks, IDiskBacking)"/>, into an open disk (each block rehashed as it lands).</summary>
    public static int Apply(DiskBlocks message, Disk target) => Apply(message, target.BlockCount, target.WriteBlock);

    public delegate void BlockWriter(long block, ReadOnlySpan<byte> data);

    /// <summary>As <see cref="Apply(DiskBlocks, IDiskBacking)"/>, each verified block handed to <paramref name="write"/> (post-copy).</summary>
    public static int Apply(DiskBlocks message, long blocks, BlockWriter write)
    {
        if (message.Blocks.Count != message.Hashes.Count) throw new InvalidDataException("disk blocks message lists a different number of blocks and hashes");
        if (message.Blocks.Count > BatchBlocks) throw new InvalidDataException($"disk blocks message holds {message.Blocks.Count} blocks; at most {BatchBlocks}");
        foreach (ulong b in message.Blocks) if (b >= (ulong)blocks) throw new InvalidDataException($"disk blocks message names block {b}; the disk has {blocks}");
        foreach (ulong b in message.ZeroBlocks) if (b >= (ulong)blocks) throw new InvalidDataException($"disk blocks message names block {b}; the disk has {blocks}");
        var raw = new byte[message.Blocks.Count * Disk.BlockSize];
        if (raw.Length > 0)
        {
            int n;
            try { n = Zstd.Decompress(message.Zstd.Span, raw); }
            catch (Exception e) when (e is not OutOfMemoryException) { throw new InvalidDataException($"disk blocks message payload does not decompress: {e.Message}"); }
            if (n != raw.Length) throw new InvalidDataException($"disk blocks message payload is {n} bytes; its {message.Blocks.Count} blocks need {raw.Length}");
        }
        for (int i = 0; i < message.Blocks.Count; i++)
            if (XxHash3.HashToUInt64(raw.AsSpan(i * Disk.BlockSize, Disk.BlockSize)) != message.Hashes[i])
                throw new InvalidDataException($"disk block {message.Blocks[i]} does not match its hash (corrupted on the wire)");
        for (int i = 0; i < message.Blocks.Count; i++) write((long)message.Blocks[i], raw.AsSpan(i * Disk.BlockSize, Disk.BlockSize));
        var zero = new byte[Disk.BlockSize];
        foreach (ulong b in message.ZeroBlocks) write((long)b, zero);
        return message.Blocks.Count + message.ZeroBlocks.Count;
    }
}
