using System.Globalization;
using LiveMigration.Guest;
using LiveMigration.Guest.Devices.Virtio;
using LiveMigration.Guest.Devices.Virtio.Block;
using LiveMigration.Migration.Engine;
using LiveMigration.Recorder.Disk;
using LiveMigration.Trace;
using Microsoft.Win32.SafeHandles;

namespace LiveMigration.Fleet;

/// <summary>
/// The disk half of a fleet checkpoint. A guest with a drive is checkpointed as a pair taken in one
/// pause: DIR/NAME/EPOCH.ckpt (RAM and devices, whose DISK section carries the disk's content
/// digest) and DIR/NAME/EPOCH.ICOUNT.disk (".ro.disk" for a read-only drive): the disk as the
/// machine saw it at the checkpoint's icount, a sparse raw image (zero blocks are holes). The
/// icount in the name ties the image to the one checkpoint it belongs to: it is written (tmp,
/// fsync, rename) before its checkpoint, and the previous pair's image is removed only after, so
/// a crash at any point leaves the newest checkpoint with its own disk. Recovery copies the image
/// into the target's disk directory and restores the checkpoint over it; the digest the disk's
/// blocks give must be the checkpoint's (else nothing starts).
/// </summary>
public static class FleetDiskSnapshot
{
    private static string Num(ulong n) => n.ToString(CultureInfo.InvariantCulture);

    private static string FileName(long epoch, ulong icount, bool readOnly) =>
        $"{epoch.ToString(CultureInfo.InvariantCulture)}.{Num(icount)}{(readOnly ? ".ro" : "")}.disk";

    /// <summary>Writes the snapshot's blocks as DIR/NAME/EPOCH.ICOUNT.disk (the guest keeps running: the snapshot is copy-on-write).</summary>
    public static string Write(string guestDir, long epoch, ulong icount, DiskSnapshot snapshot, bool readOnly)
    {
        string path = Path.Combine(guestDir, FileName(epoch, icount, readOnly));
        string tmp = $"{path}.{Environment.ProcessId}.tmp";
        // Unchanged since the epoch's last image (an idle disk): a second name for the same file, nothing written.
        if (Unchanged(guestDir, epoch, snapshot, readOnly) is { } same && same != path)
        {
            File.Delete(tmp);
            if (link(same, tmp) == 0)
            {
                File.Move(tmp, path, overwrite: true);
                Note(guestDir, epoch, snapshot.ContentDigest, path);
                return path;
            }
        }
        var block = new byte[Disk.BlockSize];
        try
        {
            using (var handle = File.OpenHandle(tmp, FileMode.Create, FileAccess.ReadWrite))
            {
                for (long b = 0; b < snapshot.BlockCount; b++)
                {
                    if (snapshot.BlockHashes[(int)b] == Disk.ZeroBlockHash) continue; // a hole
                    snapshot.ReadBlock(b, block);
                    RandomAccess.Write(handle, block, b << Disk.BlockShift);
                }
                using (var f = new FileStream(handle, FileAccess.ReadWrite)) { f.SetLength(snapshot.BlockCount << Disk.BlockShift); f.Flush(flushToDisk: true); }
            }
            File.Move(tmp, path, overwrite: true);
        }
        catch { File.Delete(tmp); throw; }
        Note(guestDir, epoch, snapshot.ContentDigest, path);
        return path;
    }

    [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
    private static extern int link(string oldpath, string newpath);

    /// <summary>The epoch's current image when it holds exactly the snapshot's blocks (its digest, kept in a side note), else null.</summary>
    private static string? Unchanged(string guestDir, long epoch, DiskSnapshot snapshot, bool readOnly)
    {
        string note = Path.Combine(guestDir, $"{epoch.ToString(CultureInfo.InvariantCulture)}.disk-digest");
        string? previous = null;
        try
        {
            var parts = File.Exists(note) ? File.ReadAllText(note).Split(' ') : [];
            if (parts.Length == 2 && parts[0] == snapshot.ContentDigest.ToString("x16", CultureInfo.InvariantCulture) && File.Exists(Path.Combine(guestDir, parts[1])) && parts[1].EndsWith(readOnly ? ".ro.disk" : ".disk", StringComparison.Ordinal))
                previous = Path.Combine(guestDir, parts[1]);
        }
        catch (IOException) { }
        return previous;
    }

    /// <summary>Remembers which image holds the blocks with <paramref name="digest"/> (for <see cref="Unchanged"/>).</summary>
    private static void Note(string guestDir, long epoch, ulong digest, string path)
    {
        string note = Path.Combine(guestDir, $"{epoch.ToString(CultureInfo.InvariantCulture)}.disk-digest");
        File.WriteAllText($"{note}.{Environment.ProcessId}.tmp", $"{digest.ToString("x16", CultureInfo.InvariantCulture)} {Path.GetFileName(path)}");
        File.Move($"{note}.{Environment.ProcessId}.tmp", note, overwrite: true);
    }

    /// <summary>After EPOCH.ckpt took the pair at <paramref name="icount"/>: the epoch's older disk images go.</summary>
    public static void RemoveOlder(string guestDir, long epoch, ulong icount)
    {
        string keep = FileName(epoch, icount, false), keepRo = FileName(epoch, icount, true);
        foreach (var f in Directory.GetFiles(guestDir, $"{epoch.ToString(CultureInfo.InvariantCulture)}.*.disk"))
            if (Path.GetFileName(f) is var n && n != keep && n != keepRo) File.Delete(f);
    }

    /// <summary>The disk image of the checkpoint at <paramref name="checkpointPath"/> (same epoch, its icount), or null.</summary>
    public static string? Find(string checkpointPath, out bool readOnly)
    {
        var info = CheckpointFile.ReadInfo(File.ReadAllBytes(checkpointPath));
        string dir = Path.GetDirectoryName(checkpointPath)!, epoch = Path.GetFileNameWithoutExtension(checkpointPath);
        long e = long.Parse(epoch, CultureInfo.InvariantCulture);
        foreach (bool ro in new[] { false, true })
        {
            string p = Path.Combine(dir, FileName(e, info.Icount, ro));
            if (File.Exists(p)) { readOnly = ro; return p; }
        }
        readOnly = false;
        return null;
    }

    /// <summary>True when the checkpoint is of a machine with virtio-blk (so it needs its disk snapshot).</summary>
    public static bool NeedsDisk(byte[] checkpoint) => (CheckpointFile.ReadConfig(checkpoint).Virtio & VirtioDevices.Block) != 0;

    /// <summary>
    /// The checked pair: the checkpoint at <paramref name="checkpointPath"/>, and for a machine with
    /// a drive its disk image. Throws <see cref="InvalidDataException"/> (one line) when the disk is
    /// missing or is not the one the checkpoint was taken with.
    /// </summary>
    public static (byte[] Checkpoint, string? Disk, bool ReadOnly) Pair(string checkpointPath, string guest)
    {
        var bytes = File.ReadAllBytes(checkpointPath);
        if (!NeedsDisk(bytes)) return (bytes, null, false);
        string? disk = Find(checkpointPath, out bool ro);
        if (disk == null)
        {
            var info = CheckpointFile.ReadInfo(bytes);
            throw new InvalidDataException($"'{guest}' has a drive but its checkpoint {checkpointPath} (icount {info.Icount}) has no disk snapshot beside it ({FileName(long.Parse(Path.GetFileNameWithoutExtension(checkpointPath), CultureInfo.InvariantCulture), info.Icount, false)}); not recovered");
        }
        return (bytes, disk, ro);
    }

    /// <summary>Loads the pair into a machine that does not run (the check `lm recover` makes before it moves the epoch); throws one line on a mismatch.</summary>
    public static void Verify(string checkpointPath, string guest)
    {
        var (bytes, disk, ro) = Pair(checkpointPath, guest);
        if (disk == null) return;
        var backing = FileDiskBacking.Open(disk, writable: false);
        Disk d;
        try { d = Disk.Open(backing, ro); }
        catch { backing.Dispose(); throw; }
        try { CheckpointFile.Load(bytes, NullHostPort.Instance, d, compileBlocks: false, diskAtSavedContents: true).Dispose(); }
        catch (InvalidDataException e) { throw new InvalidDataException($"the disk snapshot {disk} does not match the checkpoint {checkpointPath}: {e.Message}"); }
        catch (TraceFormatException e) { throw new InvalidDataException($"the disk snapshot {disk} does not match the checkpoint {checkpointPath}: {e.Message}"); }
        finally { d.Dispose(); }
    }

    /// <summary>
    /// Copies the disk snapshot into <paramref name="target"/> (in a disk directory: partial file,
    /// fsync, rename) and opens it as the guest's disk.
    /// </summary>
    public static Disk Place(string snapshot, ConfinedPath target, bool readOnly)
    {
        string partial = $"{target.Name}.partial-{Guid.NewGuid():N}";
        try
        {
            using (var to = new FileStream(target.CreateSibling(partial), FileAccess.ReadWrite))
            using (var from = new FileStream(snapshot, FileMode.Open, FileAccess.Read))
            {
                CopySparse(from, to);
                to.Flush(flushToDisk: true);
            }
            target.ReplaceWith(partial);
        }
        catch { target.DeleteSibling(partial); throw; }
        var backing = FileDiskBacking.Open(target.Open(writable: !readOnly), target.Path, writable: !readOnly);
        try { return Disk.Open(backing, readOnly); }
        catch { backing.Dispose(); throw; }
    }

    /// <summary>Copies block by block, leaving all-zero blocks as holes.</summary>
    private static void CopySparse(FileStream from, FileStream to)
    {
        var block = new byte[Disk.BlockSize];
        long length = from.Length;
        SafeFileHandle h = to.SafeFileHandle;
        for (long at = 0; at < length; at += Disk.BlockSize)
        {
            int n = RandomAccess.Read(from.SafeFileHandle, block, at);
            if (n != Disk.BlockSize) throw new IOException($"disk snapshot {from.Name} ends inside a block");
            if (block.AsSpan().ContainsAnyExcept((byte)0)) RandomAccess.Write(h, block, at);
        }
        to.SetLength(length);
    }
}
