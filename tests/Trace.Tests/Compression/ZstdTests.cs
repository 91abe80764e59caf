using LiveMigration.Trace.Compression;

namespace LiveMigration.Trace.Tests.Compression;

/// <summary>The managed zstd binding (ZstdSharp): round trips, frames of libzstd, clean errors.</summary>
public class ZstdTests
{
    [Theory]
    [InlineData(0, 3)]
    [InlineData(1, 3)]
    [InlineData(4096, 1)]
    [InlineData(1 << 20, 1)]
    [InlineData(1 << 20, 3)]
    public void Round_trips(int length, int level)
    {
        var data = new byte[length];
        var rng = new Random(length);
        for (int i = 0; i < length; i++) data[i] = (byte)(i % 7 == 0 ? rng.Next(256) : i / 64);
        byte[] packed = Zstd.Compress(data, level);
        Assert.Equal(length, Zstd.FrameContentSize(packed));
        Assert.Equal(data, Zstd.Decompress(packed, length));
        if (length >= 4096) Assert.True(packed.Length < length / 2, "repetitive data compresses");
    }

    [Fact]
    public void Reads_a_frame_written_by_libzstd()
    {
        // ZSTD_compress(level 3) of 300 bytes 'a'..'j' repeated, by Debian's libzstd1 1.5.4.
        byte[] frame = Convert.FromHexString("28B52FFD602C008D0000506162636465666768696A01001F550B12");
        var expected = Enumerable.Range(0, 300).Select(i => (byte)('a' + i % 10)).ToArray();
        Assert.Equal(300, Zstd.FrameContentSize(frame));
        Assert.Equal(expected, Zstd.Decompress(frame, 300));
    }

    [Fact]
    public void Levels_can_alternate_on_one_thread()
    {
        var data = new byte[100_000];
        for (int i = 0; i < data.Length; i++) data[i] = (byte)(i * i >> 9);
        var fast = Zstd.Compress(data, 1);
        var slow = Zstd.Compress(data, 19);
        Assert.True(slow.Length <= fast.Length);
        Assert.Equal(data, Zstd.Decompress(fast, data.Length));
        Assert.Equal(data, Zstd.Decompress(slow, data.Length));
    }

    [Fact]
    public void Rejects_corrupt_and_oversized_frames()
    {
        byte[] packed = Zstd.Compress(new byte[10_000]);
        Assert.Throws<InvalidDataException>(() => Zstd.Decompress(packed, 9_999));
        Assert.Throws<InvalidDataException>(() => Zstd.Decompress("not zstd at all"u8, 100));
        Assert.Equal(-1, Zstd.FrameContentSize("not zstd at all"u8));
        var truncated = packed[..(packed.Length - 2)];
        Assert.Throws<InvalidDataException>(() => Zstd.Decompress(truncated, 10_000));
        Assert.Throws<InvalidDataException>(() => Zstd.Compress(new byte[1000], new byte[1]));
        Assert.Throws<InvalidDataException>(() => Zstd.Decompress(packed, new byte[100]));
    }
}
