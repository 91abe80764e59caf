using LiveMigration.Cli.Hosting;
using Xunit.Abstractions;

namespace LiveMigration.Migration.Tests;

/// <summary>The warm-up migrates its own hand-built guest with every strategy between two private hosts.</summary>
public sealed class WarmUpTests(ITestOutputHelper output)
{
    [Fact]
    public void Every_strategy_of_the_warm_up_succeeds()
    {
        var failures = MigrationWarmUp.Run(s => output.WriteLine(s));
        Assert.Empty(failures);
    }
}
