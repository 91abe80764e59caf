using System.Diagnostics;

namespace LiveMigration.Tests.Shared;

/// <summary>
/// The repository and its built guests, for every test project (compiled into each as a linked file).
/// Guests are built once per test run when they are missing.
/// </summary>
public static class RepoPaths
{
    private static readonly object BuildLock = new();
    private static bool _guestsBuilt;

    public static string Root { get; } = FindRoot();

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "LiveMigration.sln"))) return dir.FullName;
        throw new InvalidOperationException($"no LiveMigration.sln above {AppContext.BaseDirectory}");
    }

    /// <summary>Path of guests/build/NAME.elf, running `make -C guests` once if it is missing.</summary>
    public static string Guest(string name)
    {
        string path = Path.Combine(Root, "guests", "build", name + ".elf");
        lock (BuildLock)
        {
            // make runs the first time a guest is missing, not merely at the first lookup: a guest added
            // since the last build (present guests say nothing about it) still gets built.
            if (!File.Exists(path) && !_guestsBuilt)
            {
                using var make = Process.Start(new ProcessStartInfo("make", ["-s", "-C", Path.Combine(Root, "guests")]) { RedirectStandardError = true })
                    ?? throw new InvalidOperationException("cannot start make");
                string err = make.StandardError.ReadToEnd();
                make.WaitForExit();
                if (make.ExitCode != 0) throw new InvalidOperationException($"make -C guests failed:\n{err}");
                _guestsBuilt = true;
            }
        }
        if (!File.Exists(path)) throw new FileNotFoundException($"guest {name} was not built", path);
        return path;
    }

    /// <summary>
    /// guests/linux/build/{Image, initramfs.cpio}, running the build scripts once per test run (they do
    /// nothing when up to date; scripts/setup.sh has normally built the kernel already); the blank
    /// ext4 data disk (<see cref="LinuxDataDisk"/>) with them.
    /// </summary>
    public static (string Image, string Initramfs) LinuxGuest()
    {
        string dir = Path.Combine(Root, "guests", "linux");
        lock (BuildLock)
        {
            if (!_linuxBuilt)
            {
                foreach (string script in new[] { "build-kernel.sh", "build-initramfs.sh", "build-datadisk.sh" })
                {
                    using var p = Process.Start(new ProcessStartInfo(Path.Combine(dir, script)) { RedirectStandardError = true })
                        ?? throw new InvalidOperationException($"cannot start {script}");
                    string err = p.StandardError.ReadToEnd();
                    p.WaitForExit();
                    if (p.ExitCode != 0) throw new InvalidOperationException($"guests/linux/{script} failed:\n{err}");
                }
                _linuxBuilt = true;
            }
        }
        return (Path.Combine(dir, "build", "Image"), Path.Combine(dir, "build", "initramfs.cpio"));
    }

    private static bool _linuxBuilt;

    /// <summary>A fresh copy of guests/linux/build/data.img (a blank 32 MiB ext4 file system) at <paramref name="path"/>: the guest's /data.</summary>
    public static string LinuxDataDisk(string path)
    {
        LinuxGuest();
        File.Copy(Path.Combine(Root, "guests", "linux", "build", "data.img"), path, overwrite: true);
        return path;
    }
}
