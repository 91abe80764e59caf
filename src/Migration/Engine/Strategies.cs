using LiveMigration.Migration.Protocol;

namespace LiveMigration.Migration.Engine;

/// <summary>The strategy list, written once: its names on the command line, and what each does.</summary>
public static class Strategies
{
    /// <summary>Every strategy, in the order the CLI lists them.</summary>
    public static readonly IReadOnlyList<Strategy> All = [Strategy.Auto, Strategy.Log, Strategy.Precopy, Strategy.Stopcopy, Strategy.Postcopy];

    public static string Name(Strategy strategy) => strategy switch
    {
        Strategy.Auto => "auto",
        Strategy.Log => "log",
        Strategy.Precopy => "precopy",
        Strategy.Stopcopy => "stopcopy",
        Strategy.Postcopy => "postcopy",
        _ => $"strategy {(int)strategy}",
    };

    public static string Describe(Strategy strategy) => strategy switch
    {
        Strategy.Auto => "log shipping, falling back to pre-copy from C0, then post-copy of what is still dirty",
        Strategy.Log => "log shipping: checkpoint C0, then the execution log replayed on the destination",
        Strategy.Precopy => "XBZRLE pre-copy rounds",
        Strategy.Stopcopy => "pause, copy everything, resume there",
        Strategy.Postcopy => "resume there at once, pages on demand",
        _ => "unknown",
    };

    public static IEnumerable<string> Names => All.Select(Name);

    /// <summary>One line for --help: "auto (...), log (...), ...".</summary>
    public static string Help => string.Join(", ", All.Select(s => $"{Name(s)} ({Describe(s)})"));

    public static Strategy Parse(string name)
    {
        string n = name.Trim().ToLowerInvariant();
        foreach (var s in All) if (Name(s) == n) return s;
        throw new FormatException($"unknown strategy '{name}' (expected {string.Join(", ", Names)})");
    }

    public static bool IsKnown(Strategy strategy) => All.Contains(strategy);

    /// <summary>A phase as people read it: "stop-and-copy", "postcopy-interrupted".</summary>
    public static string Name(MigrationPhase phase) => System.Text.RegularExpressions.Regex.Replace(phase.ToString(), "(?<!^)([A-Z])", "-$1").ToLowerInvariant();
}
