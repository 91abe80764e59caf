namespace LiveMigration.Migration.Engine;

/// <summary>
/// Where a migration destination may keep a guest's disk: only under its disk directory
/// (<see cref="Hosting.HostOptions.DiskDir"/>, else its data directory). A path the source names is
/// taken relative to it (a relative one under it, an absolute one only when it starts there, ".."
/// resolved by name), and walked from the directory's descriptor one component at a time, never
/// through a symbolic link (<see cref="ConfinedPath"/>): the check is the open, so nothing swapped
/// in afterwards is ever walked. Anything else ("..", an absolute path elsewhere, a link anywhere
/// on the way) is refused in one line before a byte is written or read.
/// </summary>
public static class DiskPaths
{
    /// <summary>The directory images may be kept in on a host with these options (null: none).</summary>
    public static string? Root(Hosting.HostOptions options) => options.DiskDir ?? options.DataDir;

    /// <summary>
    /// Opens the directory <paramref name="path"/> lies in, under <paramref name="root"/>; throws
    /// <see cref="MigrationFailedException"/> when it leads outside or its directory does not exist.
    /// </summary>
    /// <param name="what">What the path is, for the error ("disk path", "disk base").</param>
    public static ConfinedPath Confine(string? root, string path, string what)
    {
        if (root == null) throw new MigrationFailedException($"{what} {path} refused: this host keeps no disk images (start it with --disk-dir DIR or --data DIR)");
        if (path.Length == 0) throw new MigrationFailedException($"{what} is empty");
        string given = Path.TrimEndingDirectorySeparator(Path.GetFullPath(root));
        // The root is the operator's own choice: resolved once, links and all; below it nothing is followed.
        string realRoot = Path.TrimEndingDirectorySeparator(Realpath(given));
        string full = Path.GetFullPath(path, realRoot);
        string? rel = Below(full, realRoot) ?? Below(Path.GetFullPath(path, given), given);
        if (rel == null) throw new MigrationFailedException($"{what} {path} is outside this host's disk directory {realRoot}");
        var parts = rel.Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
        var dir = ConfinedPath.Native.OpenRoot(realRoot);
        string shown = realRoot;
        try
        {
            for (int i = 0; i < parts.Length - 1; i++)
            {
                shown = Path.Combine(shown, parts[i]);
                var next = ConfinedPath.Native.OpenDirectory(dir, parts[i], path, what, shown, realRoot)
                    ?? throw new MigrationFailedException($"{what} {path}: its directory does not exist on this host");
                dir.Dispose();
                dir = next;
            }
            string name = parts[^1];
            if (ConfinedPath.Native.Kind(dir, name) == ConfinedPath.Native.FileKind.Link)
                throw ConfinedPath.Native.LinkRefused(dir, name, path, what, Path.Combine(shown, name), realRoot);
            return new ConfinedPath(dir, name, Path.Combine(shown, name), what);
        }
        catch
        {
            dir.Dispose();
            throw;
        }
    }

    /// <summary>The part of <paramref name="full"/> below <paramref name="root"/> (non-empty), or null.</summary>
    private static string? Below(string full, string root) =>
        full.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal) && full.Length > root.Length + 1 ? full[(root.Length + 1)..] : null;

    /// <summary>realpath(3) of the trusted root: each component's link resolved.</summary>
    private static string Realpath(string path)
    {
        string current = Path.GetPathRoot(path) ?? "/";
        foreach (var part in path[current.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            string next = Path.Combine(current, part);
            current = new DirectoryInfo(next).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? next;
        }
        return current;
    }
}
