using Google.Protobuf;
using LiveMigration.Guest;
using LiveMigration.Guest.Loader;
using LiveMigration.Guest.Memory;
using LiveMigration.Migration.Engine;
using LiveMigration.Migration.Protocol;
using LiveMigration.Migration.Xbzrle;

namespace LiveMigration.Migration.Tests;

/// <summary>
/// Pre-copy's one page pipeline (<see cref="PrecopyPageEncoder"/> -> <see cref="PrecopyPageDecoder"/>)
/// without a network: XBZRLE against the cache, against C0 after a fallback, unchanged pages, zero
/// and free pages, and a real guest migrated round by round to the same digest.
/// </summary>
public sealed class PrecopyPipelineTests
{
    private static Machine NewMachine(ulong memory = MachineConfig.DefaultMemorySize) => new(new MachineConfig { MemorySize = memory }, NullHostPort.Instance);

    /// <summary>An encoder whose batches land in <paramref name="dst"/> at once.</summary>
    private sealed class Pipe
    {
        private readonly PrecopyPageDecoder _decoder = new();
        public readonly List<Envelope> Sent = [];
        public readonly PrecopyCounts Counts = new();
        public readonly PrecopyPageEncoder Encoder;

        public Pipe(Machine src, Machine dst, long cacheBytes)
        {
            Encoder = new PrecopyPageEncoder(src, new XbzrlePageCache(cacheBytes), Counts, e =>
            {
                Sent.Add(e);
                if (e.BodyCase == Envelope.BodyOneofCase.ZeroPages) PageReceiver.Apply(dst.Memory, e.ZeroPages);
                else _decoder.Apply(dst.Memory, e.DeltaPages);
            });
        }

        public void Round(IEnumerable<int> pages, MachineSnapshot? c0 = null)
        {
            Sent.Clear();
            foreach (int p in pages) Encoder.Send(p, c0);
            Encoder.Flush();
        }

        public IEnumerable<(int Page, PageEncoding Kind, uint Length)> Pages() =>
            Sent.Where(e => e.BodyCase == Envelope.BodyOneofCase.DeltaPages)
                .SelectMany(e => e.DeltaPages.Pages.Select((p, i) => ((int)p, (PageEncoding)e.DeltaPages.Kinds[i], e.DeltaPages.Lengths[i])));
    }

    private static void Write(Machine m, int page, int offset, byte value)
    {
        var data = new byte[GuestMemory.PageSize];
        m.Memory.PageSpan(page).CopyTo(data);
        data[offset] = value;
        m.Memory.WritePage(page, data);
    }

    private static void AssertSamePages(Machine src, Machine dst)
    {
        for (int p = 0; p < src.Memory.PageCount; p++)
            Assert.True(src.Memory.PageSpan(p).SequenceEqual(dst.Memory.PageSpan(p)), $"page {p} differs");
    }

    [Fact]
    public void Cached_pages_go_as_small_deltas_unchanged_ones_not_at_all_and_zero_pages_as_markers()
    {
        using var src = NewMachine(1 << 20);
        using var dst = NewMachine(1 << 20);
        for (int p = 0; p < 8; p++) Write(src, p, 100 + p, (byte)(p + 1));
        var pipe = new Pipe(src, dst, 1 << 20);
        var all = Enumerable.Range(0, src.Memory.PageCount).ToList();

        pipe.Round(all); // round 1: the cache is empty
        Assert.All(pipe.Pages(), x => Assert.Equal(PageEncoding.Full, x.Kind));
        Assert.Equal(8, pipe.Counts.Full);
        Assert.Equal(src.Memory.PageCount - 8, pipe.Counts.Zero);
        AssertSamePages(src, dst);

        Write(src, 2, 7, 0xEE);           // a small change: a delta against the cached copy
        Write(src, 3, 103, 4);            // the same byte again: unchanged
        src.Memory.ZeroPage(5);           // now all zero: a marker, and the cache forgets it
        pipe.Round([2, 3, 5]);
        var sent = pipe.Pages().ToList();
        var delta = Assert.Single(sent);
        Assert.Equal((2, PageEncoding.Delta), (delta.Page, delta.Kind));
        Assert.True(delta.Length < 16, $"a one-byte change cost {delta.Length} bytes");
        Assert.Equal(1, pipe.Counts.Unchanged);
        Assert.Equal(1, pipe.Counts.Xbzrle);
        AssertSamePages(src, dst);

        Write(src, 5, 9, 1);              // back from zero: not cached, so whole again
        pipe.Round([5]);
        var whole = pipe.Pages().Single();
        Assert.Equal((5, PageEncoding.Full), (whole.Page, whole.Kind));
        AssertSamePages(src, dst);
    }

    [Fact]
    public void After_a_fallback_pages_go_as_deltas_against_their_C0_copies()
    {
        using var src = NewMachine(1 << 20);
        using var dst = NewMachine(1 << 20);
        for (int p = 0; p < 4; p++) Write(src, p, 10, (byte)(p + 1));
        // Both sides hold C0 (the destination returned to it when the source fell back).
        var setup = new Pipe(src, dst, 1 << 20);
        setup.Round(Enumerable.Range(0, src.Memory.PageCount));
        using var c0 = src.TakeSnapshot();
        Write(src, 1, 2000, 0x55);        // dirtied since C0
        Write(src, 2, 10, 3);             // rewritten with its C0 contents
        var pipe = new Pipe(src, dst, 1 << 20); // a fresh cache: nothing in it yet
        pipe.Round([1, 2], c0);
        var kinds = pipe.Pages().ToList();
        Assert.Equal((1, PageEncoding.DeltaBase), (kinds.Single().Page, kinds.Single().Kind));
        Assert.True(kinds.Single().Length < 16);
        Assert.Equal(1, pipe.Counts.Unchanged);
        AssertSamePages(src, dst);
        // The page is in the cache now: the next change is a plain delta.
        Write(src, 1, 2001, 0x56);
        pipe.Round([1]);
        Assert.Equal(PageEncoding.Delta, pipe.Pages().Single().Kind);
        AssertSamePages(src, dst);
    }

    [Theory]
    [InlineData(16 << 20)] // the cache holds the 4 MiB working set
    [InlineData(1 << 20)]  // too small: evictions, whole pages
    [InlineData(0)]        // no cache: zero pages and whole pages only
    public void Iterative_pre_copy_of_the_dirty_guest_ends_in_the_same_digest(int cacheBytes)
    {
        using var src = NewMachine();
        using var dst = NewMachine();
        src.Reset(ElfLoader.Load(src, File.ReadAllBytes(LiveMigration.Tests.Shared.RepoPaths.Guest("dirty"))));
        var client = src.Memory.CreateDirtyClient("precopy"); // starts with every page dirty
        var pipe = new Pipe(src, dst, cacheBytes);
        var pages = new List<int>();
        int Round()
        {
            pages.Clear();
            client.CollectAndClear(pages);
            pipe.Round(pages);
            return pages.Count;
        }

        src.Run(200_000); // the runtime reports its free RAM first, as a live guest would have long before
        Assert.True(src.Balloon.FreePageCount > 0);
        Assert.Equal(src.Memory.PageCount, Round());
        for (int round = 0; round < 10; round++)
        {
            Assert.Equal(StopReason.InstructionLimit, src.Run(src.Icount + 300_000));
            Round();
        }
        Round(); // stop-and-copy: the last dirty pages, then CPU and devices
        dst.RestoreDeviceState(new Guest.State.StateReader(src.SaveDeviceState()));
        Assert.Equal(src.ComputeDigest(), dst.ComputeDigest());

        Assert.Equal(StopReason.Exited, src.Run(500_000_000)); // both run on to the end and agree again
        Assert.Equal(StopReason.Exited, dst.Run(500_000_000));
        Assert.Equal(src.ComputeDigest(), dst.ComputeDigest());

        var c = pipe.Counts;
        string counts = $"free {c.Free}, zero {c.Zero}, full {c.Full}, xbzrle {c.Xbzrle} ({c.XbzrleBytes} B), unchanged {c.Unchanged}";
        Assert.True(c.Free >= (120 << 20) / GuestMemory.PageSize, counts);
        Assert.True(c.Full > 0, counts);
        if (cacheBytes >= 16 << 20)
        {
            Assert.True(c.Xbzrle > 0, counts);
            // ~20 sparse 8-byte writes per page per round: deltas are far smaller than pages.
            Assert.True(c.XbzrleBytes < c.Xbzrle * GuestMemory.PageSize / 4, counts);
        }
        if (cacheBytes == 0) Assert.Equal(0, c.Xbzrle);
    }

    private static DeltaPages Batch(uint page, PageEncoding kind, byte[] payload, int lengthOverride = -1)
    {
        var b = new DeltaPages { RawLength = (uint)payload.Length, Kinds = ByteString.CopyFrom([(byte)kind]), Zstd = ByteString.CopyFrom(LiveMigration.Trace.Compression.Zstd.Compress(payload, 1)) };
        b.Pages.Add(page);
        b.Lengths.Add((uint)(lengthOverride >= 0 ? lengthOverride : payload.Length));
        return b;
    }

    [Fact]
    public void The_decoder_refuses_inconsistent_batches_before_they_land()
    {
        using var dst = NewMachine(1 << 20);
        var decoder = new PrecopyPageDecoder();
        Assert.Throws<ProtocolException>(() => decoder.Apply(dst.Memory, Batch(3, PageEncoding.Delta, [0x80, 0x20, 0x01, 0xAA]))); // run beyond the page
        Assert.Throws<ProtocolException>(() => decoder.Apply(dst.Memory, Batch(3, PageEncoding.Unchanged, [])));           // never on the wire
        Assert.Throws<ProtocolException>(() => decoder.Apply(dst.Memory, Batch(3, PageEncoding.Full, new byte[100])));     // a short whole page
        Assert.Throws<ProtocolException>(() => decoder.Apply(dst.Memory, Batch(3, PageEncoding.Zero, [1])));               // zero pages are markers
        Assert.Throws<ProtocolException>(() => decoder.Apply(dst.Memory, Batch((uint)dst.Memory.PageCount, PageEncoding.Full, new byte[GuestMemory.PageSize])));
        Assert.Throws<ProtocolException>(() => decoder.Apply(dst.Memory, Batch(3, (PageEncoding)9, [])));
        Assert.Throws<ProtocolException>(() => decoder.Apply(dst.Memory, Batch(3, PageEncoding.Full, new byte[GuestMemory.PageSize], lengthOverride: 100))); // trailing bytes
        var mismatched = Batch(3, PageEncoding.Full, new byte[GuestMemory.PageSize]);
        mismatched.Lengths.Add(0);
        Assert.Throws<ProtocolException>(() => decoder.Apply(dst.Memory, mismatched));
        Assert.True(dst.Memory.PageSpan(3).IndexOfAnyExcept((byte)0) < 0); // nothing landed
        var page = new byte[GuestMemory.PageSize];
        page[5] = 7;
        decoder.Apply(dst.Memory, Batch(3, PageEncoding.Full, page));
        Assert.Equal(7, dst.Memory.PageSpan(3)[5]);
    }
}
