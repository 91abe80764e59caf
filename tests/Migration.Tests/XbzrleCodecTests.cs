using FsCheck;
using FsCheck.Fluent;
using LiveMigration.Migration.Xbzrle;

namespace LiveMigration.Migration.Tests;

public class XbzrleCodecTests
{
    private const int PageSize = 4096;

    private static byte[] Encode(byte[] oldPage, byte[] newPage, int limit, out XbzrleEncodeStatus status)
    {
        var dst = new byte[limit];
        status = XbzrleCodec.Encode(oldPage, newPage, dst, out int len);
        return dst.AsSpan(0, len).ToArray();
    }

    // ---- Hand-computed vectors ----

    [Fact]
    public void Vector_TwoRunsInASmallPage()
    {
        byte[] oldPage = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77];
        byte[] newPage = [0x00, 0x11, 0xAA, 0xBB, 0x44, 0x55, 0x66, 0xCC];
        // skip 2, copy 2 (AA BB), skip 3, copy 1 (CC)
        var delta = Encode(oldPage, newPage, 64, out var status);
        Assert.Equal(XbzrleEncodeStatus.Encoded, status);
        Assert.Equal(new byte[] { 0x02, 0x02, 0xAA, 0xBB, 0x03, 0x01, 0xCC }, delta);
    }

    [Fact]
    public void Vector_DifferenceAtByteZeroStartsWithAZeroLengthZeroRun()
    {
        var oldPage = new byte[16];
        var newPage = new byte[16];
        newPage[0] = 0xFF;
        // zrun 0, nzrun 1, FF; the trailing 15 equal bytes are implicit
        Assert.Equal(new byte[] { 0x00, 0x01, 0xFF }, Encode(oldPage, newPage, 64, out _));
    }

    [Fact]
    public void Vector_AlternatingBytesGiveOneBytePairs()
    {
        byte[] oldPage = [0, 0, 0, 0, 0, 0];
        byte[] newPage = [1, 0, 1, 0, 1, 0];
        Assert.Equal(new byte[] { 0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01 }, Encode(oldPage, newPage, 64, out _));
    }

    [Fact]
    public void Vector_TwoByteUlebForLongZeroRun()
    {
        var oldPage = new byte[PageSize];
        var newPage = new byte[PageSize];
        newPage[200] = 0x5A;
        // 200 = 0b1_1001000 -> C8 01
        Assert.Equal(new byte[] { 0xC8, 0x01, 0x01, 0x5A }, Encode(oldPage, newPage, PageSize, out _));
    }

    [Fact]
    public void Vector_LastByteOfPage()
    {
        var oldPage = new byte[PageSize];
        var newPage = new byte[PageSize];
        newPage[4095] = 0x01;
        // 4095 = 0x0FFF = 0b11111_1111111 -> FF 1F
        Assert.Equal(new byte[] { 0xFF, 0x1F, 0x01, 0x01 }, Encode(oldPage, newPage, PageSize, out _));
    }

    [Fact]
    public void Vector_WholePageDiffers_NeedsPageSizePlusThreeBytes()
    {
        var oldPage = new byte[PageSize];
        var newPage = Enumerable.Repeat((byte)0xEE, PageSize).ToArray();
        // zrun 0 (00), nzrun 4096 = 0b100000_0000000 -> 80 20, then 4096 data bytes
        var delta = Encode(oldPage, newPage, PageSize + 3, out var status);
        Assert.Equal(XbzrleEncodeStatus.Encoded, status);
        Assert.Equal(PageSize + 3, delta.Length);
        Assert.Equal(new byte[] { 0x00, 0x80, 0x20 }, delta[..3]);
        Assert.Equal(XbzrleEncodeStatus.Overflow, XbzrleCodec.Encode(oldPage, newPage, new byte[PageSize], out int len));
        Assert.Equal(0, len);
    }

    [Fact]
    public void Vector_LongDataRunAcrossVectorWidths()
    {
        var oldPage = new byte[PageSize];
        var newPage = new byte[PageSize];
        for (int i = 100; i < 100 + 150; i++) newPage[i] = 0x77;
        // zrun 100 (64), nzrun 150 = 0b1_0010110 -> 96 01, 150 x 77
        var expected = new byte[] { 0x64, 0x96, 0x01 }.Concat(Enumerable.Repeat((byte)0x77, 150)).ToArray();
        Assert.Equal(expected, Encode(oldPage, newPage, PageSize, out _));
    }

    [Fact]
    public void Unchanged_IsDistinctFromAnEmptyDelta_EvenWithLimitZero()
    {
        var page = Enumerable.Range(0, PageSize).Select(i => (byte)i).ToArray();
        Assert.Equal(XbzrleEncodeStatus.Unchanged, XbzrleCodec.Encode(page, (byte[])page.Clone(), Span<byte>.Empty, out int len));
        Assert.Equal(0, len);
        Assert.Equal(0, XbzrleCodec.EncodedSize(page, page));
    }

    [Fact]
    public void OneChangedByte_IsNotUnchanged_AndOverflowsALimitBelowItsSize()
    {
        var oldPage = new byte[PageSize];
        var newPage = new byte[PageSize];
        newPage[4000] = 1;
        Assert.Equal(XbzrleEncodeStatus.Overflow, XbzrleCodec.Encode(oldPage, newPage, new byte[3], out _));
        Assert.Equal(XbzrleEncodeStatus.Encoded, XbzrleCodec.Encode(oldPage, newPage, new byte[4], out int len));
        Assert.Equal(4, len);
    }

    [Fact]
    public void Decode_HandVector()
    {
        byte[] page = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77];
        XbzrleCodec.Decode([0x02, 0x02, 0xAA, 0xBB, 0x03, 0x01, 0xCC], page);
        Assert.Equal(new byte[] { 0x00, 0x11, 0xAA, 0xBB, 0x44, 0x55, 0x66, 0xCC }, page);
    }

    [Fact]
    public void Decode_EmptyDeltaLeavesPageAlone()
    {
        byte[] page = [1, 2, 3];
        XbzrleCodec.Decode(ReadOnlySpan<byte>.Empty, page);
        Assert.Equal(new byte[] { 1, 2, 3 }, page);
    }

    // ---- Malformed input ----

    public static TheoryData<byte[], XbzrleDecodeError> Malformed => new()
    {
        { new byte[] { 0x80 }, XbzrleDecodeError.TruncatedLength },                 // zrun ULEB cut off
        { new byte[] { 0x00, 0x81 }, XbzrleDecodeError.TruncatedLength },           // nzrun ULEB cut off
        { new byte[] { 0x05 }, XbzrleDecodeError.MissingDataRun },                  // zrun alone
        { new byte[] { 0x00, 0x01, 0xAA, 0x02 }, XbzrleDecodeError.MissingDataRun },
        { new byte[] { 0x00, 0x05, 0xAA, 0xBB }, XbzrleDecodeError.TruncatedData },   // 5 announced, 2 present
        { new byte[] { 0x00, 0x00 }, XbzrleDecodeError.EmptyDataRun },
        { new byte[] { 0x00, 0x01, 0xAA, 0x00, 0x01, 0xBB }, XbzrleDecodeError.EmptyZeroRun },
        { new byte[] { 0x80, 0x20, 0x01, 0xAA }, XbzrleDecodeError.RunPastPageEnd }, // zrun 4096 then data: past end
        { new byte[] { 0xFF, 0x1F, 0x02, 0xAA, 0xBB }, XbzrleDecodeError.RunPastPageEnd }, // 4095 + 2 > 4096
        { new byte[] { 0x81, 0x20 }, XbzrleDecodeError.RunPastPageEnd },             // zrun 4097
        { new byte[] { 0x00, 0x81, 0x20 }, XbzrleDecodeError.RunPastPageEnd },       // nzrun 4097
        { new byte[] { 0xFF, 0xFF, 0xFF, 0xFF, 0x0F }, XbzrleDecodeError.LengthTooLarge }, // 2^32-1
        { new byte[] { 0x80, 0x80, 0x80, 0x80, 0x80, 0x01 }, XbzrleDecodeError.LengthTooLarge }, // 6-byte ULEB
    };

    [Theory]
    [MemberData(nameof(Malformed))]
    public void Decode_RejectsMalformedDelta_AndLeavesPageUntouched(byte[] delta, XbzrleDecodeError expected)
    {
        var page = Enumerable.Range(0, PageSize).Select(i => (byte)(i * 7)).ToArray();
        var before = (byte[])page.Clone();
        Assert.False(XbzrleCodec.TryDecode(delta, page, out var error, out _));
        Assert.Equal(expected, error);
        var ex = Assert.Throws<InvalidDataException>(() => XbzrleCodec.Decode(delta, page));
        Assert.Contains("malformed XBZRLE delta", ex.Message);
        Assert.Equal(before, page);
    }

    [Fact]
    public void Decode_RandomGarbage_OnlyEverFailsWithInvalidDataException()
    {
        var rng = new Random(1234);
        var page = new byte[PageSize];
        int rejected = 0;
        for (int n = 0; n < 20000; n++)
        {
            var delta = new byte[rng.Next(0, 40)];
            rng.NextBytes(delta);
            // Bias towards short lengths so some deltas are well-formed.
            for (int k = 0; k < delta.Length; k += 3) delta[k] &= 0x3F;
            var before = (byte[])page.Clone();
            try { XbzrleCodec.Decode(delta, page); }
            catch (InvalidDataException) { rejected++; Assert.Equal(before, page); }
        }
        Assert.InRange(rejected, 1, 19999);
    }

    // ---- Properties ----

    /// <summary>Scalar reference encoder written straight from the grammar, with no limit.</summary>
    private static byte[] ReferenceEncode(byte[] oldPage, byte[] newPage)
    {
        var output = new List<byte>();
        void Uleb(int v)
        {
            do
            {
                byte b = (byte)(v & 0x7F);
                v >>= 7;
                output.Add(v != 0 ? (byte)(b | 0x80) : b);
            } while (v != 0);
        }
        int i = 0;
        while (i < newPage.Length)
        {
            int z = 0;
            while (i < newPage.Length && oldPage[i] == newPage[i]) { i++; z++; }
            if (i == newPage.Length) break;
            int start = i;
            while (i < newPage.Length && oldPage[i] != newPage[i]) i++;
            Uleb(z);
            Uleb(i - start);
            for (int k = start; k < i; k++) output.Add(newPage[k]);
        }
        return output.ToArray();
    }

    public sealed record PagePair(byte[] Old, byte[] New, string Shape)
    {
        public override string ToString() => $"{Shape} ({Old.Length} bytes)";
    }

    /// <summary>Random page pairs: sparse single bytes, dense random, clustered runs, or everything.</summary>
    private static Arbitrary<PagePair> Pages()
    {
        var gen =
            from seed in Gen.Choose(0, int.MaxValue)
            from shape in Gen.Choose(0, 5)
            from size in Gen.Elements(PageSize, PageSize, PageSize, 1, 7, 31, 33, 64, 100)
            select Make(seed, shape, size);
        return gen.ToArbitrary();
    }

    private static PagePair Make(int seed, int shape, int size)
    {
        var rng = new Random(seed);
        var oldPage = new byte[size];
        rng.NextBytes(oldPage);
        if (rng.Next(3) == 0) Array.Clear(oldPage);
        var newPage = (byte[])oldPage.Clone();
        string name;
        switch (shape)
        {
            case 0: name = "unchanged"; break;
            case 1:
                name = "sparse";
                for (int n = rng.Next(1, 8); n > 0; n--) newPage[rng.Next(size)] ^= (byte)rng.Next(1, 256);
                break;
            case 2:
                name = "dense";
                for (int i = 0; i < size; i++) if (rng.Next(2) == 0) newPage[i] = (byte)rng.Next(256);
                break;
            case 3:
                name = "clusters";
                for (int n = rng.Next(1, 12); n > 0; n--)
                {
                    int at = rng.Next(size), len = rng.Next(1, 300);
                    for (int i = at; i < Math.Min(size, at + len); i++) newPage[i] = (byte)~oldPage[i];
                }
                break;
            case 4:
                name = "all";
                for (int i = 0; i < size; i++) newPage[i] = (byte)(oldPage[i] + 1);
                break;
            default:
                name = "words"; // 8-byte stores, as a guest makes them
                for (int n = rng.Next(1, 64); n > 0; n--)
                {
                    int at = rng.Next(size) & ~7;
                    for (int i = at; i < Math.Min(size, at + 8); i++) newPage[i] = (byte)rng.Next(256);
                }
                break;
        }
        return new PagePair(oldPage, newPage, name);
    }

    private static readonly Config Runs = Config.QuickThrowOnFailure.WithMaxTest(2000);

    [Fact]
    public void Property_EncodeMatchesReferenceAndDecodeRoundTrips()
    {
        Prop.ForAll(Pages(), p =>
        {
            var expected = ReferenceEncode(p.Old, p.New);
            var dst = new byte[p.New.Length * 2 + 16];
            var status = XbzrleCodec.Encode(p.Old, p.New, dst, out int len);
            bool same = p.Old.AsSpan().SequenceEqual(p.New);
            if (same) return status == XbzrleEncodeStatus.Unchanged && expected.Length == 0;
            if (status != XbzrleEncodeStatus.Encoded || !dst.AsSpan(0, len).SequenceEqual(expected)) return false;
            if (XbzrleCodec.EncodedSize(p.Old, p.New) != len) return false;
            var page = (byte[])p.Old.Clone();
            XbzrleCodec.Decode(dst.AsSpan(0, len), page);
            return page.AsSpan().SequenceEqual(p.New);
        }).Check(Runs);
    }

    [Fact]
    public void Property_OverflowHappensExactlyAboveTheEncodedSize()
    {
        var withLimit = from p in Pages().Generator
                        from slack in Gen.Choose(-5, 5)
                        select (p, slack);
        Prop.ForAll(withLimit.ToArbitrary(), t =>
        {
            var (p, slack) = t;
            int size = ReferenceEncode(p.Old, p.New).Length;
            bool unchanged = size == 0;
            foreach (int limit in new[] { size - 1, size, size + slack, size + 1 })
            {
                if (limit < 0) continue;
                var status = XbzrleCodec.Encode(p.Old, p.New, new byte[limit], out int len);
                var want = unchanged ? XbzrleEncodeStatus.Unchanged
                    : size <= limit ? XbzrleEncodeStatus.Encoded : XbzrleEncodeStatus.Overflow;
                if (status != want) return false;
                if (status == XbzrleEncodeStatus.Encoded && len != size) return false;
            }
            return true;
        }).Check(Runs);
    }

    [Fact]
    public void DifferingRunLength_AgreesWithScalarAtEveryOffsetAndLength()
    {
        var rng = new Random(7);
        for (int n = 0; n < 3000; n++)
        {
            int len = rng.Next(0, 130);
            var a = new byte[len];
            var b = new byte[len];
            rng.NextBytes(a);
            for (int i = 0; i < len; i++) b[i] = (byte)(a[i] ^ 0xFF);
            int eqAt = rng.Next(len + 1);
            if (eqAt < len) b[eqAt] = a[eqAt];
            Assert.Equal(eqAt, XbzrleCodec.DifferingRunLength(a, b));
        }
    }
}
