using LiveMigration.Migration.Xbzrle;

namespace LiveMigration.Migration.Tests;

public class XbzrlePageCacheTests
{
    private const int PageSize = 4096;

    private static byte[] Page(byte fill) => Enumerable.Repeat(fill, PageSize).ToArray();

    [Fact]
    public void CapacityFollowsTheByteBudget()
    {
        Assert.Equal(4, new XbzrlePageCache(4 * PageSize + 100).CapacityPages);
        Assert.Equal(0, new XbzrlePageCache(PageSize - 1).CapacityPages);
        Assert.Equal(16, new XbzrlePageCache(64 * 1024, pageSize: 4096).CapacityPages);
    }

    [Fact]
    public void HitReturnsTheStoredCopy_MissIsCounted()
    {
        var cache = new XbzrlePageCache(4 * PageSize);
        Assert.False(cache.TryGet(7, out _));
        cache.Insert(7, Page(0xAB));
        Assert.True(cache.TryGet(7, out var copy));
        Assert.Equal(Page(0xAB), copy.ToArray());
        Assert.Equal(1, cache.Hits);
        Assert.Equal(1, cache.Misses);
    }

    [Fact]
    public void CopyCanBeUpdatedInPlace()
    {
        var cache = new XbzrlePageCache(2 * PageSize);
        cache.Insert(1, Page(1));
        Assert.True(cache.TryGet(1, out var copy));
        Page(9).CopyTo(copy);
        Assert.True(cache.TryGet(1, out var again));
        Assert.Equal(9, again[100]);
    }

    [Fact]
    public void EvictsTheLeastRecentlyUsedPage()
    {
        var cache = new XbzrlePageCache(3 * PageSize);
        cache.Insert(10, Page(10));
        cache.Insert(11, Page(11));
        cache.Insert(12, Page(12));
        Assert.True(cache.TryGet(10, out _)); // 10 is now the most recent; 11 the least
        cache.Insert(13, Page(13));
        Assert.False(cache.Contains(11));
        Assert.Equal(1, cache.Evictions);
        Assert.Equal(new long[] { 13, 10, 12 }, cache.PagesByRecency());
        Assert.True(cache.TryGet(12, out var c12));
        Assert.Equal(12, c12[0]);
        Assert.True(cache.TryGet(13, out var c13));
        Assert.Equal(13, c13[PageSize - 1]);
    }

    [Fact]
    public void ReinsertReplacesWithoutEvicting()
    {
        var cache = new XbzrlePageCache(2 * PageSize);
        cache.Insert(1, Page(1));
        cache.Insert(2, Page(2));
        cache.Insert(1, Page(3));
        Assert.Equal(0, cache.Evictions);
        Assert.Equal(2, cache.Count);
        Assert.True(cache.TryGet(1, out var c));
        Assert.Equal(3, c[0]);
        Assert.Equal(new long[] { 1, 2 }, cache.PagesByRecency());
    }

    [Fact]
    public void ZeroCapacityNeverStores()
    {
        var cache = new XbzrlePageCache(0);
        Assert.False(cache.Insert(1, Page(1)));
        Assert.False(cache.TryGet(1, out _));
        Assert.Equal(0, cache.Count);
    }

    [Fact]
    public void RemoveFreesASlotAndKeepsTheOthersIntact()
    {
        var cache = new XbzrlePageCache(3 * PageSize);
        cache.Insert(1, Page(1));
        cache.Insert(2, Page(2));
        cache.Insert(3, Page(3));
        Assert.True(cache.Remove(1)); // the slot of 1 is refilled with the last slot's page
        Assert.False(cache.Remove(1));
        cache.Insert(4, Page(4));
        Assert.Equal(0, cache.Evictions);
        foreach (var p in new long[] { 2, 3, 4 })
        {
            Assert.True(cache.TryGet(p, out var c));
            Assert.Equal((byte)p, c[0]);
            Assert.Equal((byte)p, c[PageSize - 1]);
        }
        Assert.Equal(new long[] { 4, 3, 2 }, cache.PagesByRecency());
    }

    [Fact]
    public void ResizeKeepsTheMostRecentPages()
    {
        var cache = new XbzrlePageCache(4 * PageSize);
        for (byte p = 1; p <= 4; p++) cache.Insert(p, Page(p));
        cache.Resize(2 * PageSize);
        Assert.Equal(2, cache.CapacityPages);
        Assert.Equal(new long[] { 4, 3 }, cache.PagesByRecency());
        Assert.True(cache.TryGet(3, out var c));
        Assert.Equal(3, c[0]);
        cache.Resize(8 * PageSize);
        Assert.Equal(8, cache.CapacityPages);
        Assert.Equal(2, cache.Count);
    }

    /// <summary>Random operations against a simple LRU model.</summary>
    [Fact]
    public void AgreesWithAReferenceLruModel()
    {
        var rng = new Random(42);
        const int capacity = 8;
        var cache = new XbzrlePageCache(capacity * PageSize);
        var model = new List<(long Page, byte Fill)>(); // front = most recent
        long evictions = 0;
        for (int step = 0; step < 20000; step++)
        {
            long page = rng.Next(20);
            switch (rng.Next(3))
            {
                case 0:
                {
                    byte fill = (byte)rng.Next(256);
                    cache.Insert(page, Page(fill));
                    int at = model.FindIndex(e => e.Page == page);
                    if (at >= 0) model.RemoveAt(at);
                    else if (model.Count == capacity) { model.RemoveAt(model.Count - 1); evictions++; }
                    model.Insert(0, (page, fill));
                    break;
                }
                case 1:
                {
                    int at = model.FindIndex(e => e.Page == page);
                    bool hit = cache.TryGet(page, out var copy);
                    Assert.Equal(at >= 0, hit);
                    if (hit)
                    {
                        var e = model[at];
                        Assert.Equal(e.Fill, copy[rng.Next(PageSize)]);
                        model.RemoveAt(at);
                        model.Insert(0, e);
                    }
                    break;
                }
                default:
                {
                    int at = model.FindIndex(e => e.Page == page);
                    Assert.Equal(at >= 0, cache.Remove(page));
                    if (at >= 0) model.RemoveAt(at);
                    break;
                }
            }
            Assert.Equal(model.Select(e => e.Page), cache.PagesByRecency());
        }
        Assert.Equal(evictions, cache.Evictions);
    }

    [Fact]
    public void SenderAndReceiverCachesStayInStep()
    {
        // The pre-copy loop both ends run: a miss sends the page whole, a hit sends a delta.
        var rng = new Random(5);
        var sender = new XbzrlePageCache(16 * PageSize);
        var receiver = new XbzrlePageCache(16 * PageSize);
        var guest = new byte[64][];
        for (int i = 0; i < guest.Length; i++) { guest[i] = new byte[PageSize]; rng.NextBytes(guest[i]); }
        var receiverRam = guest.Select(p => new byte[PageSize]).ToArray();
        var buffer = new byte[PageSize];
        for (int round = 0; round < 2000; round++)
        {
            int p = rng.Next(guest.Length);
            for (int n = rng.Next(0, 20); n > 0; n--) guest[p][rng.Next(PageSize)] = (byte)rng.Next(256);
            if (sender.TryGet(p, out var old))
            {
                var status = XbzrleCodec.Encode(old, guest[p], buffer, out int len);
                guest[p].CopyTo(old);
                Assert.True(receiver.TryGet(p, out var rold));
                if (status == XbzrleEncodeStatus.Encoded) XbzrleCodec.Decode(buffer.AsSpan(0, len), rold);
                else if (status == XbzrleEncodeStatus.Overflow) guest[p].CopyTo(rold);
                rold.CopyTo(receiverRam[p]);
            }
            else
            {
                sender.Insert(p, guest[p]);
                guest[p].CopyTo(receiverRam[p]);
                receiver.Insert(p, receiverRam[p]);
            }
            Assert.Equal(guest[p], receiverRam[p]);
        }
        Assert.True(sender.Hits > 0 && sender.Evictions > 0);
        Assert.Equal(sender.PagesByRecency(), receiver.PagesByRecency());
    }
}
