namespace LiveMigration.Migration.Engine;

/// <summary>
/// Where a migration destination may keep a guest's disk: only under its disk directory
/// (<see cref="Hosting.HostOptions.DiskDir"/>, else its data directory). A path the source names is
/// resolved there (a relative one under it), every symbolic link in it followed, and refused in one
/// line when it ends up anywhere else ("..", an absolute path elsewhere, a link that leads out),
/// before a byte is written or read. The resolved path is what the destination then uses, so a link
/// is never walked again.
/// </summary>
public static class DiskPaths
{
    private const int MaxLinks = 40; // as the kernel's ELOOP limit

    /// <summary>The directory images may be kept in on a host with these options (null: none).</summary>
    public static string? Root(Hosting.HostOptions options) => options.DiskDir ?? options.DataDir;

    /// <summary>Resolves <paramref name="path"/> under <paramref name="root"/>; throws <see cref="MigrationFailedException"/> when it leads outside.</summary>
    /// <param name="what">What the path is, for the error ("disk path", "disk base").</param>
    public static string Confine(string? root, string path, string what)
    {
        if (root == null) throw new MigrationFailedException($"{what} {path} refused: this host keeps no disk images (start it with --disk-dir DIR or --data DIR)");
        if (path.Length == 0) throw new MigrationFailedException($"{what} is empty");
        string realRoot = Resolve(Path.GetFullPath(root));
        string real = Resolve(Path.GetFullPath(path, realRoot));
        if (!real.StartsWith(Path.TrimEndingDirectorySeparator(realRoot) + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new MigrationFailedException($"{what} {path} is outside this host's disk directory {realRoot}{(real != Path.GetFullPath(path, realRoot) ? $" (it leads to {real})" : "")}");
        return real;
    }

    /// <summary>An absolute path with every symbolic link along it replaced by what it points to (as realpath(3); missing components kept as they are).</summary>
    private static string Resolve(string path)
    {
        int links = 0;
        string current = Path.GetPathRoot(path) ?? "/";
        var rest = new Queue<string>(path[current.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries));
        while (rest.TryDequeue(out var part))
        {
            if (part == ".") continue;
            if (part == "..") { current = Path.GetDirectoryName(current) ?? current; continue; }
            string next = Path.Combine(current, part);
            string? target = new FileInfo(next).LinkTarget;
            if (target == null) { current = next; continue; }
            if (++links > MaxLinks) throw new MigrationFailedException($"disk path {path}: too many symbolic links");
            // The link's target, then what is left of the path: resolved component by component again.
            string full = Path.GetFullPath(target, current);
            var again = new Queue<string>(full[(Path.GetPathRoot(full) ?? "/").Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries));
            foreach (var r in rest) again.Enqueue(r);
            rest = again;
            current = Path.GetPathRoot(full) ?? "/";
        }
        return current;
    }
}
