namespace LiveMigration.Guest.Devices.Virtio.Block;

/// <summary>
/// The host's store behind a <see cref="Disk"/> (a raw image file, or memory in tests and on a
/// migration destination): positional reads and writes and a durable sync. The machine never
/// opens a file; a host hands it one of these. Reads may come from a checkpoint thread while the
/// guest's thread writes, so implementations are safe for concurrent positional access.
/// </summary>
public interface IDiskBacking : IDisposable
{
    long Length { get; }

    /// <summary>False when the host may not write the store (a read-only file): the disk then never commits.</summary>
    bool Writable { get; }

    void Read(long offset, Span<byte> destination);
    void Write(long offset, ReadOnlySpan<byte> data);

    /// <summary>Returns once everything written so far survives a host crash.</summary>
    void Sync();
}

/// <summary>A disk store in memory: tests, and an image a migration destination is assembling.</summary>
public sealed class MemoryDiskBacking(byte[] bytes, bool writable = true) : IDiskBacking
{
    public byte[] Bytes => bytes;
    public long Length => bytes.LongLength;
    public bool Writable => writable;
    public int Syncs { get; private set; }

    public void Read(long offset, Span<byte> destination) => bytes.AsSpan(checked((int)offset), destination.Length).CopyTo(destination);

    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        if (!writable) throw new InvalidOperationException("the disk store is read-only");
        data.CopyTo(bytes.AsSpan(checked((int)offset), data.Length));
    }

    public void Sync() => Syncs++;

    public void Dispose() { }
}
