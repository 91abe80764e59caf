/// <summary>
/// The repository the benchmarks run from (compiled into each benchmark as a linked file): found above
/// the binaries, or else above the working directory (a benchmark run from a copied build).
/// </summary>
internal static class BenchRepo
{
    public static string Root { get; } = Find();

    public static string Guests => Path.Combine(Root, "guests", "build");

    /// <summary>The bytes of guests/build/NAME.elf; a missing guest ends the benchmark with one line (exit 2), not a stack trace.</summary>
    public static byte[] GuestElf(string name)
    {
        string path = Path.Combine(Guests, name + ".elf");
        if (File.Exists(path)) return File.ReadAllBytes(path);
        Console.Error.WriteLine($"bench: {path} is missing; build the guests first (`make -C guests`, or `bash scripts/setup.sh`)");
        Environment.Exit(2);
        return [];
    }

    /// <summary>"--name value" from the command line, or the fallback.</summary>
    public static string Arg(string[] args, string name, string fallback)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : fallback;
    }

    private static string Find()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Environment.CurrentDirectory })
            for (var d = new DirectoryInfo(start); d != null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "LiveMigration.sln")) || File.Exists(Path.Combine(d.FullName, "guests", "build", "kv.elf")))
                    return d.FullName;
        throw new FileNotFoundException("the repository (LiveMigration.sln or guests/build) was not found above the benchmark or the working directory");
    }
}
