using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Transport;

namespace LiveMigration.Migration.Tests;

/// <summary>A post-copy manifest's page list travels as runs and comes back exactly; bad runs are refused.</summary>
public sealed class ManifestPagesTests
{
    [Theory]
    [InlineData(new int[0], 0)]
    [InlineData(new[] { 5 }, 1)]
    [InlineData(new[] { 0, 1, 2, 3, 10, 11, 40 }, 3)]
    public void Runs_round_trip(int[] pages, int runs)
    {
        var m = new PostcopyManifest();
        ManifestPages.AddRuns(m, pages);
        Assert.Equal(runs, m.RunFirst.Count);
        Assert.Equal(pages, ManifestPages.Expand(m, 64));
    }

    [Fact]
    public void A_page_beyond_memory_or_mismatched_runs_are_refused()
    {
        var beyond = new PostcopyManifest();
        beyond.RunFirst.Add(60);
        beyond.RunCount.Add(5);
        Assert.Contains("beyond the end of memory", Assert.Throws<ProtocolException>(() => ManifestPages.Expand(beyond, 64)).Message);
        var wrapped = new PostcopyManifest();
        wrapped.RunFirst.Add(uint.MaxValue);
        wrapped.RunCount.Add(2);
        Assert.Throws<ProtocolException>(() => ManifestPages.Expand(wrapped, 64));
        var mismatched = new PostcopyManifest();
        mismatched.RunFirst.Add(1);
        Assert.Throws<ProtocolException>(() => ManifestPages.Expand(mismatched, 64));
        var tooMany = new PostcopyManifest();
        tooMany.RunFirst.Add(0);
        tooMany.RunCount.Add(1000);
        Assert.Throws<ProtocolException>(() => ManifestPages.Expand(tooMany, 64));
    }
}
