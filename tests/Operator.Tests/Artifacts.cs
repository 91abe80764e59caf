using LiveMigration.Tests.Shared;

namespace LiveMigration.Operator.Tests;

/// <summary>Screenshots the tests keep: TestResults/operator/ under the repository (gitignored).</summary>
public static class Artifacts
{
    public static string Dir { get; } = Directory.CreateDirectory(Path.Combine(RepoPaths.Root, "TestResults", "operator")).FullName;

    public static string File(string name) => Path.Combine(Dir, name);
}
