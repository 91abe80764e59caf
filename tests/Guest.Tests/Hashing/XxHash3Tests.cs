using System.IO.Hashing;

namespace LiveMigration.Guest.Tests.Hashing;

/// <summary>
/// Every digest, page hash and trace checksum is xxh3-64 from System.IO.Hashing; traces written while
/// we bound libxxhash must keep verifying, so the values must be libxxhash's.
/// </summary>
public class XxHash3Tests
{
    private static byte[] Pattern(int length)
    {
        var data = new byte[length];
        for (int i = 0; i < length; i++) data[i] = (byte)(i * 31 + 7);
        return data;
    }

    // Reference values printed by Debian's libxxhash0 (XXH3_64bits_withSeed) for the same inputs.
    [Theory]
    [InlineData(0, 0UL, 0x2D06800538D394C2UL)]
    [InlineData(4096, 0UL, 0xA3C19F8174CDE0BBUL)]
    [InlineData(4096, 12345UL, 0x4F687FBF31594CB3UL)]
    public void Matches_libxxhash_on_patterns(int length, ulong seed, ulong expected) =>
        Assert.Equal(expected, XxHash3.HashToUInt64(Pattern(length), (long)seed));

    [Fact]
    public void Matches_libxxhash_on_text_and_zero_page()
    {
        Assert.Equal(0xA1CF18C6A10A0901UL, XxHash3.HashToUInt64("live migration"u8));
        Assert.Equal(0x40072CCF42F8FEBCUL, XxHash3.HashToUInt64("live migration"u8, unchecked((long)0x9E3779B97F4A7C15UL)));
        Assert.Equal(0x93D76FE148C689BAUL, XxHash3.HashToUInt64(new byte[4096]));
        Assert.Equal(0x93D76FE148C689BAUL, LiveMigration.Guest.Memory.GuestMemory.ZeroPageHash);
    }
}
