using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace LiveMigration.Migration.Engine;

/// <summary>
/// A file name inside a directory that was reached from the disk directory's descriptor one
/// component at a time (openat with O_NOFOLLOW | O_DIRECTORY), and is held open: every later open,
/// create, rename or delete is relative to that descriptor and never follows a link in the last
/// component. So what was checked is what is used: a directory swapped for a link after the check
/// changes nothing (the descriptor is the directory that was checked), and a final component
/// that is a link is refused at open. Made by <see cref="DiskPaths.Confine"/>.
/// </summary>
public sealed class ConfinedPath : IDisposable
{
    private readonly SafeFileHandle _dir;

    internal ConfinedPath(SafeFileHandle dir, string name, string path, string what)
    {
        _dir = dir;
        Name = name;
        Path = path;
        What = what;
    }

    /// <summary>The absolute path as the directory was when checked (messages, the guest's drive path).</summary>
    public string Path { get; }
    /// <summary>The last component.</summary>
    public string Name { get; }
    private string What { get; }

    /// <summary>True when the name is a regular file now (a link is not).</summary>
    public bool IsFile() => Native.Kind(_dir, Name) == Native.FileKind.Regular;

    /// <summary>Opens the file itself, never a link in its place (one-line refusal when it is one).</summary>
    public SafeFileHandle Open(bool writable) => Native.OpenAt(_dir, Name, writable ? Native.O_RDWR : Native.O_RDONLY, Path, What);

    /// <summary>Opens <paramref name="sibling"/> in the same directory, never a link.</summary>
    public SafeFileHandle OpenSibling(string sibling, bool writable) =>
        Native.OpenAt(_dir, sibling, writable ? Native.O_RDWR : Native.O_RDONLY, System.IO.Path.Combine(System.IO.Path.GetDirectoryName(Path)!, sibling), What);

    /// <summary>Creates <paramref name="sibling"/> in the same directory (it must not exist yet).</summary>
    public SafeFileHandle CreateSibling(string sibling) =>
        Native.OpenAt(_dir, sibling, Native.O_RDWR | Native.O_CREAT | Native.O_EXCL, System.IO.Path.Combine(System.IO.Path.GetDirectoryName(Path)!, sibling), What);

    /// <summary>Puts <paramref name="sibling"/> in place of this name (atomic, in the held directory).</summary>
    public void ReplaceWith(string sibling) => Native.RenameAt(_dir, sibling, Name, Path);

    /// <summary>Removes <paramref name="sibling"/> from the held directory when it is there.</summary>
    public void DeleteSibling(string sibling) => Native.UnlinkAt(_dir, sibling);

    public void Dispose() => _dir.Dispose();

    /// <summary>The few POSIX calls .NET has no descriptor-relative form of.</summary>
    internal static class Native
    {
        // Linux values (x86-64 and arm64 share them).
        public const int O_RDONLY = 0, O_RDWR = 2, O_CREAT = 0x40, O_EXCL = 0x80, O_DIRECTORY = 0x10000, O_NOFOLLOW = 0x20000, O_CLOEXEC = 0x80000;
        private const int ENOENT = 2, EEXIST = 17, ENOTDIR = 20, ELOOP = 40, AT_SYMLINK_NOFOLLOW = 0x100;

        [DllImport("libc", SetLastError = true, EntryPoint = "openat")]
        private static extern int openat(int dirfd, string path, int flags, int mode);
        [DllImport("libc", SetLastError = true, EntryPoint = "renameat")]
        private static extern int renameat(int olddirfd, string oldpath, int newdirfd, string newpath);
        [DllImport("libc", SetLastError = true, EntryPoint = "unlinkat")]
        private static extern int unlinkat(int dirfd, string path, int flags);
        [DllImport("libc", SetLastError = true, EntryPoint = "readlinkat")]
        private static extern nint readlinkat(int dirfd, string path, byte[] buf, nint size);

        public enum FileKind { Missing, Regular, Directory, Link, Other }

        private static int Fd(SafeFileHandle h) => (int)h.DangerousGetHandle();

        /// <summary>The root itself (the operator's trusted directory): opened by its resolved path.</summary>
        public static SafeFileHandle OpenRoot(string root)
        {
            int fd = openat(-100 /* AT_FDCWD */, root, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
            if (fd < 0) throw new MigrationFailedException($"this host's disk directory {root} cannot be opened ({Marshal.GetLastPInvokeErrorMessage()})");
            return new SafeFileHandle(fd, ownsHandle: true);
        }

        /// <summary>One directory component below <paramref name="dir"/>, never through a link; null when it does not exist.</summary>
        public static SafeFileHandle? OpenDirectory(SafeFileHandle dir, string name, string path, string what, string shown, string root)
        {
            int fd = openat(Fd(dir), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
            if (fd >= 0) return new SafeFileHandle(fd, ownsHandle: true);
            int errno = Marshal.GetLastPInvokeError();
            if (errno == ENOENT) return null;
            if (errno is ELOOP or ENOTDIR && Kind(dir, name) == FileKind.Link) throw LinkRefused(dir, name, path, what, shown, root);
            throw new MigrationFailedException($"{what} {path}: {shown} is not a directory ({Marshal.GetPInvokeErrorMessage(errno)})");
        }

        public static SafeFileHandle OpenAt(SafeFileHandle dir, string name, int flags, string path, string what)
        {
            int fd = openat(Fd(dir), name, flags | O_NOFOLLOW | O_CLOEXEC, Convert.ToInt32("644", 8));
            if (fd >= 0) return new SafeFileHandle(fd, ownsHandle: true);
            int errno = Marshal.GetLastPInvokeError();
            if (errno == ELOOP) throw new MigrationFailedException($"{what} {path} is outside this host's disk directory: it is a symbolic link now (never followed there)");
            if (errno == ENOENT) throw new FileNotFoundException($"{what} {path} does not exist on this host");
            if (errno == EEXIST) throw new IOException($"{path} exists already");
            throw new IOException($"{what} {path} cannot be opened: {Marshal.GetPInvokeErrorMessage(errno)}");
        }

        public static void RenameAt(SafeFileHandle dir, string from, string to, string path)
        {
            if (renameat(Fd(dir), from, Fd(dir), to) != 0) throw new IOException($"{from} cannot take the place of {path}: {Marshal.GetLastPInvokeErrorMessage()}");
        }

        public static void UnlinkAt(SafeFileHandle dir, string name)
        {
            if (unlinkat(Fd(dir), name, 0) != 0 && Marshal.GetLastPInvokeError() != ENOENT)
                throw new IOException($"{name} cannot be removed: {Marshal.GetLastPInvokeErrorMessage()}");
        }

        /// <summary>What <paramref name="name"/> is in <paramref name="dir"/>, links not followed.</summary>
        public static FileKind Kind(SafeFileHandle dir, string name)
        {
            var buf = new byte[1];
            if (readlinkat(Fd(dir), name, buf, 1) >= 0) return FileKind.Link;
            if (Marshal.GetLastPInvokeError() == ENOENT) return FileKind.Missing;
            int fd = openat(Fd(dir), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
            if (fd >= 0) { new SafeFileHandle(fd, ownsHandle: true).Dispose(); return FileKind.Directory; }
            return Marshal.GetLastPInvokeError() == ENOTDIR ? FileKind.Regular : FileKind.Other;
        }

        /// <summary>A link in the path: refused, saying where it leads (it is never followed).</summary>
        public static MigrationFailedException LinkRefused(SafeFileHandle dir, string name, string path, string what, string shown, string root)
        {
            var buf = new byte[4096];
            nint n = readlinkat(Fd(dir), name, buf, buf.Length);
            string target = n > 0 ? System.Text.Encoding.UTF8.GetString(buf, 0, (int)n) : "?";
            return new MigrationFailedException($"{what} {path} is outside this host's disk directory {root}: {shown} is a symbolic link (to {target}), never followed there");
        }
    }
}
