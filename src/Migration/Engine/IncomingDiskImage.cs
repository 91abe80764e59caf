using LiveMigration.Recorder.Disk;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// The image a migration destination assembles from <see cref="DiskTransfer"/> messages: a
/// temporary file next to the target (a copy of the base it named, or zeros), renamed over the
/// target only on <see cref="Commit"/> (at GO). An aborted or killed migration leaves no image a
/// later start could take as good, and never touches the source's.
/// </summary>
public sealed class IncomingDiskImage : IDisposable
{
    private FileDiskBacking? _backing;
    private bool _done;
    private bool _handedOver; // a Disk owns the backing now (its owner disposes it)

    private IncomingDiskImage(string target, string partial, FileDiskBacking backing)
    {
        Target = target;
        PartialPath = partial;
        _backing = backing;
    }

    public string Target { get; }
    public string PartialPath { get; }
    public FileDiskBacking Backing => _backing ?? throw new ObjectDisposedException(nameof(IncomingDiskImage));

    /// <summary>Starts an image of <paramref name="length"/> bytes at <paramref name="target"/>, from <paramref name="basePath"/> when it is as long.</summary>
    public static IncomingDiskImage Begin(string target, string? basePath, long length)
    {
        string partial = $"{target}.partial-{Guid.NewGuid():N}";
        if (basePath != null && new FileInfo(basePath).Length == length) File.Copy(basePath, partial);
        else using (var f = new FileStream(partial, FileMode.CreateNew, FileAccess.Write)) f.SetLength(length);
        return new IncomingDiskImage(target, partial, FileDiskBacking.Open(partial, writable: true));
    }

    /// <summary>Opens the assembled blocks as the guest's disk (one read to hash them); the disk owns the file from here.</summary>
    public Guest.Devices.Virtio.Block.Disk OpenDisk(bool readOnly)
    {
        var disk = Guest.Devices.Virtio.Block.Disk.Open(Backing, readOnly);
        _handedOver = true;
        return disk;
    }

    /// <summary>As <see cref="OpenDisk(bool)"/> when the blocks' hashes are known (nothing read: a post-copy destination in the downtime).</summary>
    public Guest.Devices.Virtio.Block.Disk OpenDisk(bool readOnly, ReadOnlySpan<ulong> blockHashes)
    {
        var disk = Guest.Devices.Virtio.Block.Disk.Open(Backing, readOnly, blockHashes);
        _handedOver = true;
        return disk;
    }

    /// <summary>Makes the assembled image durable and puts it in place of the target (a disk opened on it keeps working).</summary>
    public void Commit()
    {
        Backing.Sync();
        File.Move(PartialPath, Target, overwrite: true);
        if (!_handedOver) _backing!.Dispose();
        _backing = null;
        _done = true;
    }

    /// <summary>Discards the partial image (also what <see cref="Dispose"/> does before a commit).</summary>
    public void Abort()
    {
        if (!_handedOver) _backing?.Dispose();
        _backing = null;
        if (!_done && File.Exists(PartialPath)) File.Delete(PartialPath);
        _done = true;
    }

    public void Dispose() => Abort();
}
