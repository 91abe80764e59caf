using LiveMigration.Guest.Native;

namespace LiveMigration.Guest.Tests.Native;

/// <summary>The P/Invoke bindings to libxxhash and libzstd.</summary>
public class NativeTests
{
    [Fact]
    public void XxHash3MatchesTheReferenceVectors()
    {
        // XXH3_64bits of the empty input with seed 0: the published reference value.
        Assert.Equal(0x2D06800538D394C2UL, XxHash3.Hash([]));
        Assert.Equal(XxHash3.Hash([]), XxHash3.Hash([], 0));
    }

    [Fact]
    public void XxHash3IsStableAndSensitive()
    {
        var data = new byte[4096];
        new Random(42).NextBytes(data);
        ulong h = XxHash3.Hash(data);
        Assert.Equal(h, XxHash3.Hash(data.ToArray()));
        data[4095] ^= 1;
        Assert.NotEqual(h, XxHash3.Hash(data));
        Assert.NotEqual(XxHash3.Hash(data, 1), XxHash3.Hash(data, 2));
    }

    [Fact]
    public unsafe void XxHash3PointerOverloadAgreesWithSpan()
    {
        byte[] data = "live migration"u8.ToArray();
        fixed (byte* p = data) Assert.Equal(XxHash3.Hash(data), XxHash3.Hash(p, data.Length));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4096)]
    [InlineData(1 << 20)]
    public void ZstdRoundTrips(int length)
    {
        var data = new byte[length];
        var rng = new Random(length);
        for (int i = 0; i < length; i++) data[i] = (byte)(i % 7 == 0 ? rng.Next(256) : i / 64);
        byte[] packed = Zstd.Compress(data);
        Assert.Equal(length, Zstd.FrameContentSize(packed));
        Assert.Equal(data, Zstd.Decompress(packed, length));
        if (length >= 4096) Assert.True(packed.Length < length / 2, "repetitive data compresses");
    }

    [Fact]
    public void ZstdRejectsCorruptAndOversizedFrames()
    {
        byte[] packed = Zstd.Compress(new byte[10_000]);
        Assert.Throws<InvalidDataException>(() => Zstd.Decompress(packed, 9_999));
        Assert.Throws<InvalidDataException>(() => Zstd.Decompress("not zstd at all"u8, 100));
        var truncated = packed[..(packed.Length - 2)];
        Assert.Throws<InvalidDataException>(() => Zstd.Decompress(truncated, 10_000));
        Assert.Throws<InvalidDataException>(() => Zstd.Compress(new byte[1000], new byte[1]));
    }

    [Fact]
    public void MissingLibraryMessageNamesTheDebianPackage()
    {
        var e = new NativeLibraryMissingException("libzstd.so.1", "libzstd1", new DllNotFoundException("gone"));
        Assert.Equal("native library libzstd.so.1 is missing: install it with 'apt-get install libzstd1'", e.Message);
        Assert.Equal("libzstd1", e.DebianPackage);
        Assert.IsType<DllNotFoundException>(e.InnerException);
    }
}
