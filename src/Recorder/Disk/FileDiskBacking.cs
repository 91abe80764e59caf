using LiveMigration.Guest.Devices.Virtio.Block;
using Microsoft.Win32.SafeHandles;

namespace LiveMigration.Recorder.Disk;

/// <summary>A raw image file as a disk's store: positional I/O on one handle (safe from several threads), fsync on sync.</summary>
public sealed class FileDiskBacking : IDiskBacking
{
    private readonly SafeFileHandle _handle;

    private FileDiskBacking(SafeFileHandle handle, long length, bool writable, string path)
    {
        _handle = handle;
        Length = length;
        Writable = writable;
        Path = path;
    }

    public string Path { get; }
    public long Length { get; }
    public bool Writable { get; }

    /// <summary>Opens <paramref name="path"/>; one-line errors for a missing, unreadable or badly sized image.</summary>
    public static FileDiskBacking Open(string path, bool writable)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"drive image {path} does not exist");
        SafeFileHandle handle;
        try { handle = File.OpenHandle(path, FileMode.Open, writable ? FileAccess.ReadWrite : FileAccess.Read, writable ? FileShare.Read : FileShare.ReadWrite); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new IOException($"drive image {path} cannot be opened{(writable ? " for writing" : "")}: {e.Message}"); }
        return Open(handle, path, writable);
    }

    /// <summary>Takes <paramref name="handle"/> (opened by the caller, e.g. under a confined directory); disposes it when the image is refused.</summary>
    public static FileDiskBacking Open(SafeFileHandle handle, string path, bool writable)
    {
        long length = RandomAccess.GetLength(handle);
        if (Guest.Devices.Virtio.Block.Disk.LengthProblem(length) is { } problem)
        {
            handle.Dispose();
            throw new InvalidDataException($"drive image {path}: {problem}");
        }
        return new FileDiskBacking(handle, length, writable, path);
    }

    public void Read(long offset, Span<byte> destination)
    {
        int n = RandomAccess.Read(_handle, destination, offset);
        if (n != destination.Length) throw new IOException($"drive image {Path} is shorter than it was when opened");
    }

    public void Write(long offset, ReadOnlySpan<byte> data) => RandomAccess.Write(_handle, data, offset);

    public void Sync() => RandomAccess.FlushToDisk(_handle);

    public void Dispose() => _handle.Dispose();
}

/// <summary>`--drive FILE[,readonly]`: a raw image for virtio-blk, as QEMU's -drive file=FILE,format=raw.</summary>
public sealed record DriveSpec(string Path, bool ReadOnly)
{
    public static DriveSpec Parse(string text)
    {
        var parts = text.Split(',');
        if (parts[0].Length == 0) throw new FormatException($"--drive {text}: expected FILE[,readonly]");
        bool ro = false;
        foreach (var p in parts.Skip(1))
        {
            if (p is "readonly" or "readonly=on" or "ro") ro = true;
            else throw new FormatException($"--drive {text}: unknown option '{p}' (expected FILE[,readonly])");
        }
        return new DriveSpec(System.IO.Path.GetFullPath(parts[0]), ro);
    }

    /// <summary>Opens the image and hashes it: the disk a machine gets with <see cref="Guest.Machine.InsertDisk"/>.</summary>
    public Guest.Devices.Virtio.Block.Disk Open(bool commit = true)
    {
        var backing = FileDiskBacking.Open(Path, writable: commit && !ReadOnly);
        try { return Guest.Devices.Virtio.Block.Disk.Open(backing, ReadOnly); }
        catch { backing.Dispose(); throw; }
    }
}
