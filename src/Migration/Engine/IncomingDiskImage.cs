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

    private readonly ConfinedPath _target;

    private IncomingDiskImage(ConfinedPath target, string partial, FileDiskBacking backing)
    {
        _target = target;
        _partial = partial;
        _backing = backing;
    }

    private readonly string _partial; // its name in the target's directory
    public string Target => _target.Path;
    public FileDiskBacking Backing => _backing ?? throw new ObjectDisposedException(nameof(IncomingDiskImage));

    /// <summary>Starts an image of <paramref name="length"/> bytes at <paramref name="target"/> (a file in a directory of its own, not confined).</summary>
    public static IncomingDiskImage Begin(string target, string? basePath, long length)
    {
        string dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(target))!;
        var confined = DiskPaths.Confine(dir, target, "disk path");
        using var b = basePath == null ? null : DiskPaths.Confine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(basePath))!, basePath, "disk base");
        return Begin(confined, b, length);
    }

    /// <summary>
    /// Starts an image of <paramref name="length"/> bytes at <paramref name="target"/>, from
    /// <paramref name="basePath"/> when it is as long; every file is opened in the directories
    /// <see cref="DiskPaths.Confine"/> checked (takes <paramref name="target"/>).
    /// </summary>
    public static IncomingDiskImage Begin(ConfinedPath target, ConfinedPath? basePath, long length)
    {
        string partial = $"{target.Name}.partial-{Guid.NewGuid():N}";
        FileDiskBacking? backing = null;
        try
        {
            var handle = target.CreateSibling(partial);
            using (var to = new FileStream(handle, FileAccess.ReadWrite))
            {
                if (basePath != null)
                {
                    using var from = new FileStream(basePath.Open(writable: false), FileAccess.Read);
                    if (from.Length == length) from.CopyTo(to, 1 << 20);
                }
                to.SetLength(length);
            }
            backing = FileDiskBacking.Open(target.OpenSibling(partial, writable: true), System.IO.Path.Combine(System.IO.Path.GetDirectoryName(target.Path)!, partial), writable: true);
            return new IncomingDiskImage(target, partial, backing);
        }
        catch
        {
            backing?.Dispose();
            target.DeleteSibling(partial);
            target.Dispose();
            throw;
        }
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
        _target.ReplaceWith(_partial);
        if (!_handedOver) _backing!.Dispose();
        _backing = null;
        _done = true;
        _target.Dispose();
    }

    /// <summary>Discards the partial image (also what <see cref="Dispose"/> does before a commit).</summary>
    public void Abort()
    {
        if (!_handedOver) _backing?.Dispose();
        _backing = null;
        if (_done) return;
        _done = true;
        _target.DeleteSibling(_partial);
        _target.Dispose();
    }

    public void Dispose() => Abort();
}
