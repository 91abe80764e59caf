using LiveMigration.Guest.Memory;

namespace LiveMigration.Guest.Tests;

/// <summary>
/// The RAM digest over all pages but a set (post-copy after pre-copy verifies the pages a destination
/// already holds with it): equal when only excluded pages differ, different when any other page does,
/// and the same whether or not the excluded pages were rehashed.
/// </summary>
public sealed class PartialRamDigestTests
{
    private const ulong Size = 1 << 20; // 256 pages

    private static GuestMemory Filled(int seed)
    {
        var m = new GuestMemory(Size);
        var rng = new Random(seed);
        var page = new byte[GuestMemory.PageSize];
        for (int p = 0; p < m.PageCount; p += 3)
        {
            rng.NextBytes(page);
            m.WritePage(p, page);
        }
        return m;
    }

    [Fact]
    public void Pages_outside_the_excluded_set_decide_the_partial_digest()
    {
        int[] excluded = [3, 4, 100, 255];
        var skip = new bool[Size / GuestMemory.PageSize];
        foreach (int p in excluded) skip[p] = true;
        using var a = Filled(7);
        using var b = Filled(7);
        a.RefreshRamDigest();
        b.RefreshRamDigest();
        // Only excluded pages change on one side, and it skips them when refreshing.
        var junk = new byte[GuestMemory.PageSize];
        new Random(1).NextBytes(junk);
        foreach (int p in excluded) b.WritePage(p, junk);
        b.RefreshRamDigest(skip);
        Assert.Equal(a.RamDigestExcluding(excluded), b.RamDigestExcluding(excluded));
        // Rehashing them instead changes nothing either.
        b.RefreshRamDigest();
        Assert.Equal(a.RamDigestExcluding(excluded), b.RamDigestExcluding(excluded));
        Assert.NotEqual(a.RefreshRamDigest(), b.RefreshRamDigest());
        // Any other page that differs shows.
        b.WritePage(5, junk);
        b.RefreshRamDigest(skip);
        Assert.NotEqual(a.RamDigestExcluding(excluded), b.RamDigestExcluding(excluded));
    }
}
